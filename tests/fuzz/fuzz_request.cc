// libFuzzer: dcompd's request parsing and validation, as a client could send them. The input is
// read three ways: a GenerateRequest, a ChatRequest and a TokenizeRequest in protobuf wire format
// (gRPC), and a JSON body of /v1/completions and /v1/chat/completions (the HTTP API), whose
// translations then go through the same validation. Each must be accepted or refused with
// INVALID_ARGUMENT (FAILED_PRECONDITION: a chat without a template) and a message, never crash;
// accepted requests must satisfy every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "base/utf8.h"
#include "daemon/openai.h"
#include "daemon/validate.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/embedded_tokenizer.h"

namespace {

const dcomp::Tokenizer& Tok() { return dcomp::fuzz::EmbeddedTokenizer(); }

dcomp::v1::RequestLimits Limits() {
  dcomp::v1::RequestLimits limits;
  limits.set_max_prompt_bytes(4096);
  limits.set_max_tokens(256);
  return limits;
}

void CheckRefusal(const dcomp::Status& s) {
  if ((s.code() != dcomp::StatusCode::kInvalidArgument &&
       s.code() != dcomp::StatusCode::kFailedPrecondition) ||
      s.message().empty()) {
    std::abort();
  }
}

void CheckAccepted(const dcomp::GenerateRequest& r, int32_t prompt_tokens) {
  if (r.prompt.empty() || (!r.parse_special && r.prompt.size() > 4096) ||
      dcomp::FirstInvalidUtf8(r.prompt) || r.max_tokens < 1 || r.max_tokens > 256 ||
      prompt_tokens >= 512 || !r.sampling.Validate().ok() ||
      r.stop.size() > static_cast<size_t>(dcomp::server::kMaxStopStrings)) {
    std::abort();
  }
  for (const std::string& s : r.stop) {
    if (s.empty() || s.size() > dcomp::server::kMaxStopBytes || dcomp::FirstInvalidUtf8(s)) {
      std::abort();
    }
  }
}

void Validate(const dcomp::v1::GenerateRequest& req) {
  int32_t prompt_tokens = 0;
  auto r = dcomp::server::ValidateGenerateRequest(req, Limits(), Tok(), 512, &prompt_tokens);
  if (r.ok()) {
    CheckAccepted(*r, prompt_tokens);
  } else {
    CheckRefusal(r.status());
  }
}

void Validate(const dcomp::v1::ChatRequest& req) {
  int32_t prompt_tokens = 0;
  auto r = dcomp::server::ValidateChatRequest(req, Limits(), Tok(), 512, "chatml", &prompt_tokens);
  if (r.ok()) {
    CheckAccepted(*r, prompt_tokens);
  } else {
    CheckRefusal(r.status());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcomp::v1::GenerateRequest req;
  if (req.ParseFromArray(data, static_cast<int>(size))) Validate(req);
  dcomp::v1::ChatRequest chat;
  if (chat.ParseFromArray(data, static_cast<int>(size))) Validate(chat);
  dcomp::v1::TokenizeRequest tr;
  if (tr.ParseFromArray(data, static_cast<int>(size))) {
    (void)dcomp::server::ValidateTokenizeRequest(tr, Limits());
  }
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  dcomp::server::openai::Options options;
  if (auto c = dcomp::server::openai::ParseCompletionRequest(body, &options); c.ok()) {
    Validate(*c);
  } else {
    CheckRefusal(c.status());
  }
  if (auto c = dcomp::server::openai::ParseChatRequest(body, Limits(), &options); c.ok()) {
    Validate(*c);
  } else {
    CheckRefusal(c.status());
  }
  return 0;
}
