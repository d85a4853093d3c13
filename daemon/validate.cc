#include "daemon/validate.h"

#include <google/protobuf/unknown_field_set.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "base/utf8.h"
#include "engine/chat_template.h"

namespace dcomp::server {
namespace {

// `limit` names where max_bytes comes from.
Status CheckText(const std::string& field, const std::string& text, uint32_t max_bytes,
                 bool allow_empty, const char* limit = "limits.max_prompt_bytes") {
  if (text.empty() && !allow_empty) return InvalidArgumentError(field + ": empty");
  if (text.size() > max_bytes) {
    return InvalidArgumentError(field + ": " + std::to_string(text.size()) +
                                " bytes; the limit is " + std::to_string(max_bytes) + " (" + limit +
                                ")");
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

namespace {

// The options Generate and Chat share: max_tokens, sampling, ignore_eos, stop.
template <typename Req>
Result<GenerateRequest> ValidateOptions(const Req& req, const v1::RequestLimits& limits) {
  if (req.max_tokens() < 1 || static_cast<uint32_t>(req.max_tokens()) > limits.max_tokens()) {
    return InvalidArgumentError("max_tokens: expected 1.." + std::to_string(limits.max_tokens()) +
                                " (limits.max_tokens), got " + std::to_string(req.max_tokens()));
  }
  GenerateRequest g;
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
  if (req.stop_size() > kMaxStopStrings) {
    return InvalidArgumentError("stop: " + std::to_string(req.stop_size()) + " strings; at most " +
                                std::to_string(kMaxStopStrings));
  }
  for (int i = 0; i < req.stop_size(); ++i) {
    RETURN_IF_ERROR(CheckText("stop[" + std::to_string(i) + "]", req.stop(i), kMaxStopBytes, false,
                              "stop strings"));
    g.stop.push_back(req.stop(i));
  }
  return g;
}

// Encodes g->prompt once per request (Generate takes these ids instead of encoding it again) and
// checks that a token fits after it.
Status EncodePrompt(const Tokenizer& tok, int32_t context_length, GenerateRequest* g,
                    int32_t* prompt_tokens) {
  std::vector<int32_t> ids = tok.Encode(g->prompt, tok.add_bos(), g->parse_special);
  const size_t n = ids.size();
  if (static_cast<int64_t>(n) >= context_length) {
    return InvalidArgumentError("prompt: " + std::to_string(n) + " tokens; the context length is " +
                                std::to_string(context_length) +
                                " and at least one token must be generated after the prompt");
  }
  *prompt_tokens = static_cast<int32_t>(n);
  g->prompt_ids = std::move(ids);
  return Status::Ok();
}

}  // namespace

Result<GenerateRequest> ValidateGenerateRequest(const v1::GenerateRequest& req,
                                                const v1::RequestLimits& limits,
                                                const Tokenizer& tok, int32_t context_length,
                                                int32_t* prompt_tokens) {
  LogUnknownFields(req, "Generate");
  RETURN_IF_ERROR(CheckText("prompt", req.prompt(), limits.max_prompt_bytes(), false));
  ASSIGN_OR_RETURN(GenerateRequest g, ValidateOptions(req, limits));
  g.prompt = req.prompt();
  RETURN_IF_ERROR(EncodePrompt(tok, context_length, &g, prompt_tokens));
  return g;
}

Result<ChatFamily> ResolveChatFamily(const std::string& requested, const std::string& fallback) {
  if (!requested.empty()) {
    Result<ChatFamily> f = ParseChatFamily(requested);
    if (!f.ok()) return InvalidArgumentError("chat_template: " + f.status().message());
    return f;
  }
  if (fallback.empty()) {
    return FailedPreconditionError(
        "the model has no chat template (tokenizer.chat_template): name a family in the "
        "request's chat_template (chatml, llama3, llama2, zephyr, gemma, phi3) or set "
        "chat_template in dcompd's config");
  }
  return ParseChatFamily(fallback);
}

Result<GenerateRequest> ValidateChatRequest(const v1::ChatRequest& req,
                                            const v1::RequestLimits& limits, const Tokenizer& tok,
                                            int32_t context_length,
                                            const std::string& default_family,
                                            int32_t* prompt_tokens) {
  LogUnknownFields(req, "Chat");
  if (req.messages_size() == 0) return InvalidArgumentError("messages: empty");
  std::vector<ChatMessage> messages;
  uint64_t bytes = 0;
  for (int i = 0; i < req.messages_size(); ++i) {
    const v1::ChatMessage& m = req.messages(i);
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return InvalidArgumentError(field + ".role: expected system, user or assistant, got '" +
                                  m.role().substr(0, 64) + "'");
    }
    RETURN_IF_ERROR(CheckText(field + ".content", m.content(), limits.max_prompt_bytes(), true));
    bytes += m.content().size();
    messages.push_back({m.role(), m.content()});
  }
  if (bytes > limits.max_prompt_bytes()) {
    return InvalidArgumentError(
        "messages: " + std::to_string(bytes) + " bytes of content; the limit is " +
        std::to_string(limits.max_prompt_bytes()) + " (limits.max_prompt_bytes)");
  }
  ASSIGN_OR_RETURN(GenerateRequest g, ValidateOptions(req, limits));
  ASSIGN_OR_RETURN(const ChatFamily family, ResolveChatFamily(req.chat_template(), default_family));
  const std::string bos = tok.bos_id() >= 0 ? tok.piece(tok.bos_id()) : "";
  const std::string eos = tok.eos_id() >= 0 ? tok.piece(tok.eos_id()) : "";
  Result<std::string> prompt = RenderChat(family, messages, true, bos, eos);
  if (!prompt.ok()) return InvalidArgumentError("messages: " + prompt.status().message());
  g.prompt = std::move(*prompt);
  g.parse_special = true;
  RETURN_IF_ERROR(EncodePrompt(tok, context_length, &g, prompt_tokens));
  return g;
}

Status ValidateTokenizeRequest(const v1::TokenizeRequest& req, const v1::RequestLimits& limits) {
  LogUnknownFields(req, "Tokenize");
  return CheckText("text", req.text(), limits.max_prompt_bytes(), true);
}

}  // namespace dcomp::server
