#include "engine/generate.h"

#include <chrono>
#include <cmath>

namespace dcomp {
namespace {
double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string_view Strip(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}
}  // namespace

Result<GenerateResult> Generate(Transformer& model, const Tokenizer& tok,
                                const GenerateRequest& req, const TokenCallback& on_token) {
  if (req.prompt.empty()) return InvalidArgumentError("prompt is empty");
  if (req.max_tokens < 1) {
    return InvalidArgumentError("max_tokens must be >= 1, got " + std::to_string(req.max_tokens));
  }
  RETURN_IF_ERROR(req.sampling.Validate());
  GenerateResult res;
  res.prompt_ids =
      req.prompt_ids ? *req.prompt_ids : tok.Encode(req.prompt, tok.add_bos(), req.parse_special);
  const int32_t ctx = model.context_length();
  if (static_cast<int64_t>(res.prompt_ids.size()) >= ctx) {
    return InvalidArgumentError("prompt is " + std::to_string(res.prompt_ids.size()) +
                                " tokens; the context length is " + std::to_string(ctx) +
                                " and at least one token must be generated");
  }
  model.Reset();
  Sampler sampler(req.sampling);
  std::vector<int32_t> all = res.prompt_ids;
  std::vector<float> logits;
  TextStreamer streamer(&tok, /*at_text_start=*/false);  // continues the prompt

  auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(model.Forward(res.prompt_ids, false, &logits));
  auto t1 = std::chrono::steady_clock::now();
  res.prefill_seconds = Seconds(t0, t1);
  res.stop_reason = "length";
  for (int32_t i = 0; i < req.max_tokens; ++i) {
    const int32_t next = sampler.Sample(logits, all);
    if (req.stop_at_eos &&
        (tok.is_end_of_generation(next) || (next == tok.bos_id() && tok.bos_id() >= 0))) {
      res.stop_reason = "eos";
      break;
    }
    res.generated_ids.push_back(next);
    all.push_back(next);
    std::string piece = streamer.Push(next);
    res.completion += piece;
    if (on_token && !on_token(next, piece)) {
      res.stop_reason = "callback";
      break;
    }
    if (i + 1 == req.max_tokens) break;
    if (model.position() >= ctx) {
      res.stop_reason = "context";
      break;
    }
    RETURN_IF_ERROR(model.Forward(std::span<const int32_t>(&next, 1), false, &logits));
  }
  res.completion += streamer.Flush();
  res.decode_seconds = Seconds(t1, std::chrono::steady_clock::now());
  res.text = tok.Decode(all);
  return res;
}

double LogSumExp(std::span<const float> x) {
  double mx = x[0];
  for (float v : x) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (float v : x) sum += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(sum);
}

Result<PerplexityResult> EvalPerplexity(Transformer& model, const Tokenizer& tok,
                                        std::string_view text) {
  constexpr std::string_view kSep = "<|endoftext|>";
  std::vector<std::string_view> pieces;
  size_t start = 0;
  for (;;) {
    size_t at = text.find(kSep, start);
    pieces.push_back(
        text.substr(start, at == std::string_view::npos ? text.size() - start : at - start));
    if (at == std::string_view::npos) break;
    start = at + kSep.size();
  }
  PerplexityResult r;
  double nll = 0.0;
  std::vector<float> logits;
  const size_t vocab = static_cast<size_t>(model.config().vocab_size);
  for (size_t i = 1; i < pieces.size(); ++i) {
    std::string_view story = Strip(pieces[i]);
    if (story.empty()) continue;
    std::vector<int32_t> ids = tok.Encode(story, true);
    if (ids.size() > static_cast<size_t>(model.context_length())) {
      ids.resize(static_cast<size_t>(model.context_length()));
    }
    if (ids.size() < 2) continue;
    model.Reset();
    RETURN_IF_ERROR(model.Forward(ids, true, &logits));
    for (size_t t = 1; t < ids.size(); ++t) {
      const float* l = logits.data() + (t - 1) * vocab;
      nll += LogSumExp({l, vocab}) - static_cast<double>(l[static_cast<size_t>(ids[t])]);
    }
    r.tokens += static_cast<int64_t>(ids.size()) - 1;
    r.stories += 1;
  }
  if (r.tokens == 0) {
    return InvalidArgumentError(
        "no text to score: expected stories separated by <|endoftext|> (the first piece is "
        "skipped as a partial story)");
  }
  r.mean_nll = nll / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.mean_nll);
  return r;
}

}  // namespace dcomp
