#include "daemon/validate.h"

#include <google/protobuf/unknown_field_set.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "base/utf8.h"

namespace dcomp::server {
namespace {

Status CheckText(const std::string& field, const std::string& text, uint32_t max_bytes,
                 bool allow_empty) {
  if (text.empty() && !allow_empty) return InvalidArgumentError(field + ": empty");
  if (text.size() > max_bytes) {
    return InvalidArgumentError(field + ": " + std::to_string(text.size()) +
                                " bytes; the limit is " + std::to_string(max_bytes) +
                                " (limits.max_prompt_bytes)");
  }
  if (auto bad = FirstInvalidUtf8(text)) {
    return InvalidArgumentError(field + ": invalid UTF-8 at byte " + std::to_string(*bad));
  }
  return Status::Ok();
}

}  // namespace

std::string DescribeUnknownFields(const google::protobuf::Message& m, const std::string& where) {
  const google::protobuf::Reflection* r = m.GetReflection();
  const google::protobuf::UnknownFieldSet& u = r->GetUnknownFields(m);
  std::string out;
  if (!u.empty()) {
    std::string nums;
    for (int i = 0; i < u.field_count(); ++i) {
      nums += (i ? ", " : "") + std::to_string(u.field(i).number());
    }
    out = where + ": unknown field number" + (u.field_count() > 1 ? "s " : " ") + nums +
          " (not part of " + m.GetDescriptor()->full_name() + ")";
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
      continue;
    }
    const std::string inner = DescribeUnknownFields(r->GetMessage(m, f), where + "." + f->name());
    if (!inner.empty()) out += (out.empty() ? "" : "; ") + inner;
  }
  return out;
}

void LogUnknownFields(const google::protobuf::Message& m, const std::string& rpc) {
  if (!spdlog::should_log(spdlog::level::debug)) return;
  if (const std::string u = DescribeUnknownFields(m, "request"); !u.empty()) {
    spdlog::debug("{}: ignored {} (a newer client?)", rpc, u);
  }
}

Result<GenerateRequest> ValidateGenerateRequest(const v1::GenerateRequest& req,
                                                const v1::RequestLimits& limits,
                                                const Tokenizer& tok, int32_t context_length,
                                                int32_t* prompt_tokens) {
  LogUnknownFields(req, "Generate");
  RETURN_IF_ERROR(CheckText("prompt", req.prompt(), limits.max_prompt_bytes(), false));
  if (req.max_tokens() < 1 || static_cast<uint32_t>(req.max_tokens()) > limits.max_tokens()) {
    return InvalidArgumentError("max_tokens: expected 1.." + std::to_string(limits.max_tokens()) +
                                " (limits.max_tokens), got " + std::to_string(req.max_tokens()));
  }
  GenerateRequest g;
  g.prompt = req.prompt();
  g.max_tokens = req.max_tokens();
  g.stop_at_eos = !req.ignore_eos();
  const v1::Sampling& s = req.sampling();
  g.sampling.temperature = s.temperature();
  g.sampling.top_k = s.top_k();
  g.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  g.sampling.min_p = s.min_p();
  g.sampling.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  g.sampling.seed = s.seed();
  if (Status st = g.sampling.Validate(); !st.ok()) {
    return InvalidArgumentError("sampling." + st.message());
  }
  // Encoded once per request: Generate takes these ids instead of encoding the prompt again.
  std::vector<int32_t> ids = tok.Encode(g.prompt, tok.add_bos());
  const size_t n = ids.size();
  if (static_cast<int64_t>(n) >= context_length) {
    return InvalidArgumentError("prompt: " + std::to_string(n) + " tokens; the context length is " +
                                std::to_string(context_length) +
                                " and at least one token must be generated after the prompt");
  }
  *prompt_tokens = static_cast<int32_t>(n);
  g.prompt_ids = std::move(ids);
  return g;
}

Status ValidateTokenizeRequest(const v1::TokenizeRequest& req, const v1::RequestLimits& limits) {
  LogUnknownFields(req, "Tokenize");
  return CheckText("text", req.text(), limits.max_prompt_bytes(), true);
}

}  // namespace dcomp::server
