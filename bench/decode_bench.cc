// End-to-end engine throughput, llama-bench style: pp128 (a 128-token prompt in one forward pass)
// and tg128 (128 single-token decode steps from an empty context), at 1 and 2 threads, W8A8
// weights. Model: $DCOMP_BENCH_MODEL, else ../shared/models/llama2c/stories3M-q80.bin, else the
// embedded stories260K.
#include <benchmark/benchmark.h>

#include "base/thread_pool.h"
#include "bench/bench_model.h"
#include "engine/model_file.h"
#include "engine/transformer.h"

namespace dcomp {
namespace {

struct Loaded {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<InMemoryWeights> weights;
};

Loaded& Model() {
  static Loaded m = [] {
    Loaded l;
    auto f = OpenModelFile(BenchModelPath());
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
      std::exit(1);
    }
    l.file = std::move(*f);
    l.weights = std::move(*InMemoryWeights::Load(*l.file, WeightFormat::kW8A8));
    return l;
  }();
  return m;
}

std::vector<int32_t> Tokens(size_t n, int32_t vocab) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((i * 37 + 1) % static_cast<size_t>(vocab));
  return t;
}

// Runs `step` (one pp or tg run of `n` tokens) per iteration and reports tokens/s.
template <typename Step>
void RunTokens(benchmark::State& state, const char* kind, Step step) {
  Loaded& m = Model();
  ThreadPool pool(static_cast<int>(state.range(0)));
  const size_t n = static_cast<size_t>(state.range(1));
  auto t = Transformer::Create(m.weights.get(), &pool, static_cast<int32_t>(n));
  std::vector<int32_t> toks = Tokens(n, m.file->config().vocab_size);
  std::vector<float> logits;
  for (auto _ : state) {
    (*t)->Reset();
    if (!step(**t, toks, &logits)) state.SkipWithError("forward failed");
  }
  state.counters["tok/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
  state.SetLabel(m.file->config().name + " " + kind + std::to_string(n));
}

void BM_Prefill(benchmark::State& state) {
  RunTokens(state, "pp",
            [](Transformer& t, const std::vector<int32_t>& toks, std::vector<float>* l) {
              return t.Forward(toks, false, l).ok();
            });
}

void BM_Decode(benchmark::State& state) {
  RunTokens(state, "tg",
            [](Transformer& t, const std::vector<int32_t>& toks, std::vector<float>* l) {
              for (const int32_t& id : toks) {
                if (!t.Forward(std::span<const int32_t>(&id, 1), false, l).ok()) return false;
              }
              return true;
            });
}

BENCHMARK(BM_Prefill)
    ->ArgNames({"threads", "tokens"})
    ->Args({1, 128})
    ->Args({2, 128})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Decode)
    ->ArgNames({"threads", "tokens"})
    ->Args({1, 128})
    ->Args({2, 128})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace dcomp

BENCHMARK_MAIN();
