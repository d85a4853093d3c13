// Generation and evaluation loops over a Transformer and a Tokenizer, shared by `dcomp` and the
// daemon: prompt -> prefill -> sample/decode until EOS, the token limit, the context end or the
// callback asks to stop; and perplexity with the reference protocol of the project.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"

namespace dcomp {

struct GenerateRequest {
  std::string prompt;
  int32_t max_tokens = 64;
  SamplingParams sampling;
  bool stop_at_eos = true;  // stop at any end-of-generation token (Tokenizer::is_end_of_generation)
  // Parse control-token text in the prompt (a rendered chat prompt): see Tokenizer::Encode.
  bool parse_special = false;
  // The prompt's token ids when the caller has encoded it already (dcompd's request validation):
  // they must be tok.Encode(prompt, tok.add_bos(), parse_special) with the Tokenizer given to
  // Generate, which then uses them instead of encoding the prompt again. Unset: Generate encodes
  // the prompt.
  std::optional<std::vector<int32_t>> prompt_ids;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string text;              // decoded prompt + completion
  std::string completion;        // decoded completion only
  std::string stop_reason;       // "eos", "length", "context", "callback"
  double prefill_seconds = 0.0;  // prompt forward pass (time to first token)
  double decode_seconds = 0.0;   // all decode steps after the first token
  // Tokens after the first per second of decoding (0 with fewer than two tokens).
  double decode_tokens_per_second() const {
    return generated_ids.size() > 1 && decode_seconds > 0
               ? static_cast<double>(generated_ids.size() - 1) / decode_seconds
               : 0.0;
  }
};

// Called for each generated token with the text it completes (possibly empty: partial UTF-8 is
// held back). Return false to stop.
using TokenCallback = std::function<bool(int32_t id, const std::string& text)>;

// Validates the request (non-empty prompt, max_tokens >= 1, sampling parameters, prompt fits the
// context) and generates. The prompt is encoded here unless req.prompt_ids is set. The transformer
// is Reset() first.
Result<GenerateResult> Generate(Transformer& model, const Tokenizer& tok,
                                const GenerateRequest& req, const TokenCallback& on_token = {});

struct PerplexityResult {
  int64_t stories = 0;
  int64_t tokens = 0;  // tokens scored
  double mean_nll = 0.0;
  double ppl = 0.0;
};

// The reference protocol: split `text` on "<|endoftext|>", drop the first piece (it starts
// mid-story), strip each piece and drop empty ones; encode each with BOS and the dummy prefix,
// truncate to the transformer's context length, and score every next token.
// log(sum(exp(x))), in double, stable for any range of logits (x must not be empty).
double LogSumExp(std::span<const float> x);

Result<PerplexityResult> EvalPerplexity(Transformer& model, const Tokenizer& tok,
                                        std::string_view text);

}  // namespace dcomp
