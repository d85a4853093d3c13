// Kernel micro-benchmarks: GB/s of int8 weights streamed by gemv_q8_q8 for each variant, next to
// the machine's measured single-thread read bandwidth (BM_MemoryReadBandwidth). Shapes are those of
// stories3M (in cache) and TinyLlama-1.1B (out of cache: 4-46 MB per matrix).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/ops.h"

namespace dcomp::kernels {
namespace {

void BM_MemoryReadBandwidth(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  std::vector<uint64_t> buf(bytes / 8);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = i;
  for (auto _ : state) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < buf.size(); i += 4) {
      s0 += buf[i];
      s1 += buf[i + 1];
      s2 += buf[i + 2];
      s3 += buf[i + 3];
    }
    benchmark::DoNotOptimize(s0 + s1 + s2 + s3);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_MemoryReadBandwidth)->Arg(1024)->Unit(benchmark::kMillisecond);

// The Hadamard transform of one token's matrix input (ModelConfig::hadamard_inputs), in place:
// TinyLlama-1.1B's 2048-wide inputs (one block) and its 5632-wide FFN activation (11 blocks of
// 512). Items are input entries transformed; each iteration transforms twice (H H = B I) and
// divides by B, so that the values stay the same (the division costs about a tenth of the time).
void BM_HadamardTransform(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 13) - 6.0f;
  const float back = 1.0f / static_cast<float>(HadamardBlock(n));
  for (auto _ : state) {
    HadamardTransform(x.data(), n);
    HadamardTransform(x.data(), n);
    for (float& v : x) v *= back;
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(n));
}
BENCHMARK(BM_HadamardTransform)->Arg(192)->Arg(2048)->Arg(5632);

struct Operand {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> row_sum;
  std::vector<int8_t> x;
  Q8MatrixView view;
};

Operand MakeOperand(size_t rows, size_t cols, size_t n_tok) {
  Operand o;
  const size_t stride = PaddedCols(cols);
  std::mt19937 rng(1);
  // Random codes in [-127, 127]; the padding past `cols` stays zero (the kernels' contract).
  auto random_rows = [&](std::vector<int8_t>* m, size_t n) {
    m->assign(n * stride, 0);
    for (size_t r = 0; r < n; ++r)
      for (size_t c = 0; c < cols; ++c)
        (*m)[r * stride + c] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  };
  random_rows(&o.q, rows);
  o.scale.assign(rows, 0.01f);
  o.row_sum.resize(rows);
  ComputeRowSums(o.q.data(), rows, stride, o.row_sum.data());
  random_rows(&o.x, n_tok);
  o.view = {o.q.data(), o.scale.data(), o.row_sum.data(), rows, cols, stride};
  return o;
}

void BM_GemvQ8(benchmark::State& state, const KernelTable* k, size_t rows, size_t cols) {
  Operand o = MakeOperand(rows, cols, 1);
  std::vector<float> y(rows);
  for (auto _ : state) {
    k->gemv_q8_q8(o.view, o.x.data(), 0.01f, y.data(), 0, rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * o.view.stride));
}

// Out of cache: cycles through copies of the matrix totalling at least 512 MiB, so every call
// streams its weights from DRAM, as a decode step of a model larger than the caches does.
void BM_GemvQ8Dram(benchmark::State& state, const KernelTable* k, size_t rows, size_t cols) {
  const size_t stride = PaddedCols(cols);
  const size_t copies = std::max<size_t>(2, (size_t{512} << 20) / (rows * stride) + 1);
  std::vector<Operand> ops;
  for (size_t i = 0; i < copies; ++i) ops.push_back(MakeOperand(rows, cols, 1));
  std::vector<float> y(rows);
  size_t i = 0;
  for (auto _ : state) {
    const Operand& o = ops[i++ % copies];
    k->gemv_q8_q8(o.view, o.x.data(), 0.01f, y.data(), 0, rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * stride));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * rows * cols));
}

// The same out of cache (argument 1; 0: one copy, in cache), with the matrix's codes packed to
// `bits` (items/s: weights per second, comparable with BM_GemvQ8Dram; bytes/s: packed bytes), on
// uniform levels or on the packer's default non-uniform ones (LevelTable(bits, 2)).
void BM_GemvPackedDram(benchmark::State& state, const KernelTable* k, size_t rows, size_t cols,
                       int bits, bool nonuniform) {
  const size_t row_bytes = PackedRowBytes(cols, bits);
  const size_t copies =
      state.range(0) ? std::max<size_t>(2, (size_t{512} << 20) / (rows * row_bytes) + 1) : 1;
  const size_t stride = PaddedCols(cols);
  std::mt19937 rng(1);
  std::vector<int8_t> q(rows * stride, 0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c)
      q[r * stride + c] =
          static_cast<int8_t>(static_cast<int>(rng() % (2 * MaxCode(bits) + 1)) - MaxCode(bits));
  std::vector<std::vector<uint8_t>> packed(copies, std::vector<uint8_t>(rows * row_bytes));
  const std::vector<uint8_t> mag = LevelTable(bits, 2.0);
  const CodeLevels levels = MakeCodeLevels(bits, mag);
  if (nonuniform) {  // the same codes, as the values of the levels they index
    for (int8_t& v : q)
      v = static_cast<int8_t>(v < 0 ? -mag[static_cast<size_t>(-v)] : mag[static_cast<size_t>(v)]);
  }
  for (auto& p : packed) {
    PackRows(q.data(), rows, cols, stride, bits, p.data(), nonuniform ? &levels : nullptr);
  }
  std::vector<float> scale(rows, 0.01f), y(rows);
  std::vector<int8_t> x(stride, 3);
  size_t i = 0;
  for (auto _ : state) {
    const PackedMatrixView v{
        packed[i++ % copies].data(),   scale.data(), rows, cols, row_bytes, bits,
        nonuniform ? &levels : nullptr};
    k->gemv_packed_q8(v, x.data(), 0.01f, y.data(), 0, rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * row_bytes));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * rows * cols));
}

void BM_GemmQ8(benchmark::State& state, const KernelTable* k, size_t rows, size_t cols,
               size_t n_tok) {
  Operand o = MakeOperand(rows, cols, n_tok);
  std::vector<float> xs(n_tok, 0.01f), y(rows * n_tok);
  for (auto _ : state) {
    k->gemm_q8_q8(o.view, o.x.data(), o.view.stride, xs.data(), n_tok, y.data(), rows, 0, rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GMAC/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(rows * cols * n_tok) / 1e9,
      benchmark::Counter::kIsRate);
}

// A batch of decode tokens (argument: tokens) against a matrix out of cache: what one step of
// continuous batching costs per kernel, against one token (items/s: multiply-adds per second).
void BM_GemmQ8Dram(benchmark::State& state, const KernelTable* k, size_t rows, size_t cols) {
  const size_t n_tok = static_cast<size_t>(state.range(0));
  const size_t copies = std::max<size_t>(2, (size_t{512} << 20) / (rows * PaddedCols(cols)) + 1);
  std::vector<Operand> ops;
  for (size_t i = 0; i < copies; ++i) ops.push_back(MakeOperand(rows, cols, n_tok));
  std::vector<float> xs(n_tok, 0.01f), y(rows * n_tok);
  size_t i = 0;
  for (auto _ : state) {
    const Operand& o = ops[i++ % copies];
    if (n_tok == 1) {
      k->gemv_q8_q8(o.view, o.x.data(), 0.01f, y.data(), 0, rows);
    } else {
      k->gemm_q8_q8(o.view, o.x.data(), o.view.stride, xs.data(), n_tok, y.data(), rows, 0, rows);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * rows * cols * n_tok));
}

void Register() {
  const std::pair<const char*, std::pair<size_t, size_t>> shapes[] = {
      {"stories3M_w1_512x192", {512, 192}},     {"stories3M_wcls_4096x192", {4096, 192}},
      {"tinyllama_wq_2048x2048", {2048, 2048}}, {"tinyllama_w1_5632x2048", {5632, 2048}},
      {"tinyllama_w2_2048x5632", {2048, 5632}},
  };
  for (const KernelTable* k : AvailableKernelTables()) {
    for (const auto& [name, shape] : shapes) {
      benchmark::RegisterBenchmark((std::string("BM_GemvQ8/") + k->name + "/" + name).c_str(),
                                   BM_GemvQ8, k, shape.first, shape.second)
          ->Unit(benchmark::kMicrosecond);
    }
    // Out of cache: rows of 2048 codes (w1), and of 5632 (w2: rows longer than the packed
    // kernels' prefetch distance divided by the rows they multiply at a time).
    const std::pair<const char*, std::pair<size_t, size_t>> dram_shapes[] = {
        {"tinyllama_w1_5632x2048", {5632, 2048}}, {"tinyllama_w2_2048x5632", {2048, 5632}}};
    for (const auto& [name, shape] : dram_shapes) {
      benchmark::RegisterBenchmark((std::string("BM_GemvQ8Dram/") + k->name + "/" + name).c_str(),
                                   BM_GemvQ8Dram, k, shape.first, shape.second)
          ->Unit(benchmark::kMicrosecond);
    }
    for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
      for (bool nonuniform : {false, true}) {
        const std::string tag = std::to_string(bits) + (nonuniform ? "bit-levels" : "bit");
        for (const auto& [name, shape] : dram_shapes) {
          benchmark::RegisterBenchmark(
              (std::string("BM_GemvPackedDram/") + k->name + "/" + tag + "/" + name).c_str(),
              BM_GemvPackedDram, k, shape.first, shape.second, bits, nonuniform)
              ->Arg(1)
              ->Unit(benchmark::kMicrosecond);
        }
        benchmark::RegisterBenchmark(
            (std::string("BM_GemvPackedCache/") + k->name + "/" + tag + "/512x2048").c_str(),
            BM_GemvPackedDram, k, 512, 2048, bits, nonuniform)
            ->Arg(0)
            ->Unit(benchmark::kMicrosecond);
      }
    }
    benchmark::RegisterBenchmark(
        (std::string("BM_GemmQ8Dram/") + k->name + "/tinyllama_w1_5632x2048").c_str(),
        BM_GemmQ8Dram, k, 5632, 2048)
        ->Arg(1)
        ->Arg(2)
        ->Arg(4)
        ->Arg(8)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(
        (std::string("BM_GemmQ8/") + k->name + "/tinyllama_wq_x64tok").c_str(), BM_GemmQ8, k, 2048,
        2048, 64)
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace dcomp::kernels

int main(int argc, char** argv) {
  dcomp::kernels::Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
