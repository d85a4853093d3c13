#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

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

GenerationStream::GenerationStream(const Tokenizer& tok, const GenerateRequest& req, int32_t ctx)
    : tok_(&tok),
      max_tokens_(req.max_tokens),
      stop_at_eos_(req.stop_at_eos),
      ctx_(ctx),
      sampler_(req.sampling),
      streamer_(&tok, /*at_text_start=*/false),  // continues the prompt
      stop_(req.stop) {}

Result<GenerationStream> GenerationStream::Start(const Tokenizer& tok, const GenerateRequest& req,
                                                 int32_t context_length) {
  if (req.prompt.empty()) return InvalidArgumentError("prompt is empty");
  if (req.max_tokens < 1) {
    return InvalidArgumentError("max_tokens must be >= 1, got " + std::to_string(req.max_tokens));
  }
  RETURN_IF_ERROR(req.sampling.Validate());
  for (size_t i = 0; i < req.stop.size(); ++i) {
    if (req.stop[i].empty())
      return InvalidArgumentError("stop[" + std::to_string(i) + "] is empty");
  }
  GenerationStream s(tok, req, context_length);
  s.res_.prompt_ids =
      req.prompt_ids ? *req.prompt_ids : tok.Encode(req.prompt, tok.add_bos(), req.parse_special);
  if (static_cast<int64_t>(s.res_.prompt_ids.size()) >= context_length) {
    return InvalidArgumentError("prompt is " + std::to_string(s.res_.prompt_ids.size()) +
                                " tokens; the context length is " + std::to_string(context_length) +
                                " and at least one token must be generated");
  }
  s.history_ = s.res_.prompt_ids;
  s.res_.stop_reason = "length";
  return s;
}

int32_t GenerationStream::cache_tokens() const {
  const int64_t n = static_cast<int64_t>(res_.prompt_ids.size()) + max_tokens_ - 1;
  return static_cast<int32_t>(std::min<int64_t>(n, ctx_));
}

std::span<const int32_t> GenerationStream::NextInput(size_t max) {
  if (!started_) {
    started_ = true;
    t0_ = std::chrono::steady_clock::now();
  }
  const size_t n = std::min(max, history_.size() - fed_);
  return {history_.data() + fed_, n};
}

std::string GenerationStream::Release(const std::string& text, bool final) {
  held_ += text;
  size_t match = std::string::npos;
  for (const std::string& s : stop_) match = std::min(match, held_.find(s));
  if (match != std::string::npos) {
    res_.stop_reason = "stop";
    done_ = true;
    held_.resize(match);
    final = true;
  }
  // Keep the longest end of the text that is a proper start of a stop string.
  size_t keep = 0;
  if (!final) {
    for (const std::string& s : stop_) {
      for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
        if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  res_.completion += out;
  return out;
}

void GenerationStream::Advance(size_t n, std::span<float> logits, const TokenCallback& on_token) {
  fed_ += n;
  if (fed_ < history_.size() || done_) return;
  const int32_t next = sampler_.Sample(logits, history_);
  if (res_.generated_ids.empty()) t1_ = std::chrono::steady_clock::now();
  if (stop_at_eos_ &&
      (tok_->is_end_of_generation(next) || (next == tok_->bos_id() && tok_->bos_id() >= 0))) {
    res_.stop_reason = "eos";
    done_ = true;
    res_.tail = Release(streamer_.Flush(), true);  // no token carries it
    return;
  }
  res_.generated_ids.push_back(next);
  history_.push_back(next);
  // The last token releases everything (known before its callback, which then carries it).
  bool last = static_cast<int32_t>(res_.generated_ids.size()) == max_tokens_;
  if (static_cast<int64_t>(fed_) >= ctx_ && !last) {
    res_.stop_reason = "context";
    last = true;
  }
  std::string piece = streamer_.Push(next);
  if (last) piece += streamer_.Flush();
  const std::string text = Release(piece, last);  // may find a stop string: done_
  if (last) done_ = true;
  if (on_token && !on_token(next, text)) {
    res_.stop_reason = "callback";
    done_ = true;
  }
}

GenerateResult GenerationStream::TakeResult() {
  const auto now = std::chrono::steady_clock::now();
  if (res_.generated_ids.empty()) t1_ = now;
  res_.prefill_seconds = Seconds(t0_, t1_);
  res_.decode_seconds = Seconds(t1_, now);
  // Ended from outside (cancelled) or by the callback: what was held back joins the completion.
  res_.tail += Release(streamer_.Flush(), true);
  res_.text = res_.stop_reason == "stop" ? tok_->Decode(res_.prompt_ids) + res_.completion
                                         : tok_->Decode(history_);
  return std::move(res_);
}

Result<GenerateResult> Generate(Transformer& model, const Tokenizer& tok,
                                const GenerateRequest& req, const TokenCallback& on_token) {
  ASSIGN_OR_RETURN(GenerationStream s, GenerationStream::Start(tok, req, model.context_length()));
  model.Reset();
  std::vector<float> logits;
  while (!s.done()) {
    const std::span<const int32_t> in = s.NextInput(SIZE_MAX);
    RETURN_IF_ERROR(model.Forward(in, false, &logits));
    s.Advance(in.size(), logits, on_token);
  }
  return s.TakeResult();
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
