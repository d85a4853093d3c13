// libFuzzer: dcompd's request validation. The input is a GenerateRequest (and a TokenizeRequest)
// in protobuf wire format, as a client could send; validation must accept it or return
// INVALID_ARGUMENT naming a field, never crash. Accepted requests must satisfy every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "base/utf8.h"
#include "daemon/validate.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/embedded_tokenizer.h"

namespace {
const dcomp::Tokenizer& Tok() { return dcomp::fuzz::EmbeddedTokenizer(); }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcomp::v1::RequestLimits limits;
  limits.set_max_prompt_bytes(4096);
  limits.set_max_tokens(256);
  dcomp::v1::GenerateRequest req;
  if (req.ParseFromArray(data, static_cast<int>(size))) {
    int32_t prompt_tokens = 0;
    auto r = dcomp::server::ValidateGenerateRequest(req, limits, Tok(), 512, &prompt_tokens);
    if (r.ok()) {
      if (r->prompt.empty() || r->prompt.size() > 4096 || dcomp::FirstInvalidUtf8(r->prompt) ||
          r->max_tokens < 1 || r->max_tokens > 256 || prompt_tokens >= 512 ||
          !r->sampling.Validate().ok()) {
        std::abort();
      }
    } else if (r.status().code() != dcomp::StatusCode::kInvalidArgument ||
               r.status().message().empty()) {
      std::abort();
    }
  }
  dcomp::v1::TokenizeRequest tr;
  if (tr.ParseFromArray(data, static_cast<int>(size))) {
    (void)dcomp::server::ValidateTokenizeRequest(tr, limits);
  }
  return 0;
}
