// Generation and evaluation loops over a Transformer and a Tokenizer, shared by `dcomp` and the
// daemon: prompt -> prefill -> sample/decode until EOS, the token limit, the context end or the
// callback asks to stop; and perplexity with the reference protocol of the project.
#pragma once

#include <chrono>
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
  // Stop strings: generation stops as soon as the completion's text contains one of them; the
  // completion ends before it (the stop string and anything after it are not part of it). Text
  // that could be the start of a stop string is held back from the token callback until it is
  // known not to be one (see GenerateResult::tail). Empty strings are not allowed.
  std::vector<std::string> stop;
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
  std::string text;        // decoded prompt + completion
  std::string completion;  // decoded completion only
  // The end of the completion that no token callback carried: text held back because it could
  // have started a stop string, or an incomplete UTF-8 sequence, when generation ended without a
  // token to carry it (at EOS, or cancelled). The callbacks' texts followed by `tail` are
  // `completion`.
  std::string tail;
  std::string stop_reason;       // "eos", "stop" (a stop string), "length", "context", "callback"
  double prefill_seconds = 0.0;  // prompt forward pass (time to first token)
  double decode_seconds = 0.0;   // all decode steps after the first token
  // Tokens after the first per second of decoding (0 with fewer than two tokens).
  double decode_tokens_per_second() const {
    return generated_ids.size() > 1 && decode_seconds > 0
               ? static_cast<double>(generated_ids.size() - 1) / decode_seconds
               : 0.0;
  }
};

// Called for each generated token with the completion text it releases: possibly empty while a
// UTF-8 sequence is incomplete or the text could be the start of a stop string; the last token's
// call releases all that is left. Return false to stop.
using TokenCallback = std::function<bool(int32_t id, const std::string& text)>;

// One request's generation as a sequence of inputs and logits, for a caller that runs the forward
// passes: Generate() below, one stream at a time, or dcompd's scheduler, which steps many streams
// together (Transformer::Step). The tokens depend only on the logits it is given.
class GenerationStream {
 public:
  // Validates the request (non-empty prompt, max_tokens >= 1, sampling parameters, prompt fits a
  // context of `context_length` tokens) and encodes the prompt unless req.prompt_ids is set.
  // `tok` must outlive the stream.
  static Result<GenerationStream> Start(const Tokenizer& tok, const GenerateRequest& req,
                                        int32_t context_length);

  // Positions the stream's KV cache holds at most: the prompt and every generated token but the
  // last, within the context.
  int32_t cache_tokens() const;
  // The next input: up to `max` tokens of the prompt not yet fed, or the last sampled token.
  // Starts the stream's clock (time to first token) at the first call.
  std::span<const int32_t> NextInput(size_t max);
  // `n` tokens of the last NextInput were fed. When they complete it, `logits` are those of its
  // last token (modified: sampling works in place) and the next token is sampled, passed to
  // `on_token` and checked against the stop conditions; otherwise `logits` is ignored.
  void Advance(size_t n, std::span<float> logits, const TokenCallback& on_token);
  // Whether the next Advance samples (the pending input ends with it).
  bool WantsLogits(size_t n) const { return fed_ + n == history_.size(); }
  // Tokens of input not yet fed: the rest of the prompt, or 1 once generating.
  size_t pending() const { return history_.size() - fed_; }
  bool done() const { return done_; }
  size_t prompt_tokens() const { return res_.prompt_ids.size(); }
  size_t generated_tokens() const { return res_.generated_ids.size(); }
  // The result, complete once done(): the completion's held-back bytes flushed and the text
  // decoded.
  GenerateResult TakeResult();

 private:
  GenerationStream(const Tokenizer& tok, const GenerateRequest& req, int32_t ctx);

  const Tokenizer* tok_;
  int32_t max_tokens_;
  bool stop_at_eos_;
  int32_t ctx_;
  Sampler sampler_;
  // Completion text ready to release after `held_`, the part that could start a stop string;
  // returns the text released (all of it when `final`) and sets stop_reason "stop" on a match.
  std::string Release(const std::string& text, bool final);

  TextStreamer streamer_;
  std::vector<std::string> stop_;
  std::string held_;  // completion text not yet released (a possible start of a stop string)
  GenerateResult res_;
  std::vector<int32_t> history_;  // prompt and generated tokens
  size_t fed_ = 0;                // tokens of history_ in the KV cache
  bool done_ = false, started_ = false;
  std::chrono::steady_clock::time_point t0_, t1_;  // first input, first token
};

// Generates with one GenerationStream over `model`'s own cache (Reset() first): the prompt in one
// Forward, then one token per Forward.
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
