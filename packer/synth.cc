#include "packer/synth.h"

#include <algorithm>
#include <cmath>

#include "base/packed_codes.h"
#include "base/thread_pool.h"
#include "engine/gguf.h"
#include "engine/layer_schema.h"
#include "engine/model_file.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer {
namespace {

struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, vocab, ctx;
  float rope_theta;
  bool tied;
  const char* arch = "llama";
  int head_dim = 0;        // 0: dim / heads
  int sliding_window = 0;  // gemma3
};

constexpr Shape kShapes[] = {
    // TinyLlama-1.1B (Llama 2 architecture, 32000-token SentencePiece vocabulary).
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false},
    // Llama 3.2 1B (tied embeddings; 128256-token vocabulary, context capped at 8192 here).
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 8192, 500000.0f, true},
    // Qwen3 0.6B (q/k norms, 128-wide heads: attention 2048 wide on a 1024-wide model; tied
    // embeddings; 151936-token vocabulary; context capped at 8192 here).
    {"qwen3-0.6b", 1024, 3072, 28, 16, 8, 151936, 8192, 1000000.0f, true, "qwen3", 128},
    // Gemma 3 1B (q/k norms, post-norms, GeGLU; 4/1 heads of 256; five sliding-window layers of
    // 512 keys per global layer; 262144-token vocabulary, tied; context capped at 8192 here).
    {"gemma-3-1b", 1152, 6912, 26, 4, 1, 262144, 8192, 1000000.0f, true, "gemma3", 256, 512},
    // A small shape for tests.
    {"tiny", 128, 384, 2, 4, 2, 512, 256, 10000.0f, false},
    // A 42 MB (INT8) model for the streaming runtime's tests: twelve 3 MB layers, untied output.
    {"small", 512, 1536, 12, 8, 4, 4096, 512, 10000.0f, false},
};

// The roles the stories3M default pack splits into groups of rows (rate allocation), per group in
// stored order (most used tokens first) its width and code entropy (the groups line of the pack's
// log, `scripts/width-profile.py`). A synthetic matrix of the role is split the same way, its
// groups in row order.
struct RoleGroups {
  const char* role;
  int bits[16];
  double entropy[16];
};
constexpr RoleGroups kStories3MGroups[] = {
    {"token_embd",
     {7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6},
     {6.762, 6.748, 6.733, 6.745, 6.723, 5.811, 5.817, 5.818, 5.816, 5.804, 5.790, 5.694, 5.530,
      5.449, 5.234, 4.557}},
};
constexpr size_t kProfileGroups = 16;

// The group profile of a matrix role (an untied output takes the embedding's), or null.
const RoleGroups* GroupsOf(std::string_view role) {
  if (role == "output") role = "token_embd";
  for (const RoleGroups& g : kStories3MGroups) {
    if (role == g.role) return &g;
  }
  return nullptr;
}

// The levels the stories3M default pack rounds codes below 8 bits to (PackOptions::level_shape).
constexpr double kStories3MLevelShape = 2.0;

// The inputs the stories3M default pack computes Hadamard-transformed (ModelConfig::
// hadamard_inputs): the attention's input and output, the FFN's input and hidden activation. A
// synthetic model's weights are random in any basis; the mask makes its runtime do the transforms.
constexpr uint32_t kStories3MHadamardInputs = 0b1111;

// Per role of a layer, the width and code entropy of each of the stories3M default pack's six
// layers (the "by layer" lines of `scripts/width-profile.py`). A synthetic model of L layers
// draws layer l's matrix of the role like stories3M layer floor(6 l / L): its widths mix as the
// real pack's do, depth for depth, rather than all at the role's most common width (which made
// the synthetic TinyLlama 6.75 bits/weight packed against the real pack's 6.59).
struct RoleLayers {
  const char* role;
  int bits[6];
  double entropy[6];
};
constexpr size_t kProfileLayers = 6;
constexpr RoleLayers kStories3MLayers[] = {
    {"attn_q", {6, 5, 5, 5, 6, 5}, {5.830, 4.839, 4.842, 4.836, 5.841, 4.830}},
    {"attn_k", {6, 6, 6, 6, 7, 6}, {5.815, 5.826, 5.839, 5.838, 6.771, 5.825}},
    {"attn_v", {7, 6, 6, 7, 7, 7}, {6.766, 5.819, 5.837, 6.765, 6.757, 6.749}},
    {"attn_output", {6, 6, 6, 6, 6, 6}, {5.803, 5.820, 5.825, 5.826, 5.782, 5.834}},
    {"ffn_gate", {7, 6, 6, 6, 6, 6}, {6.767, 5.835, 5.833, 5.828, 5.834, 5.836}},
    {"ffn_up", {6, 6, 6, 6, 6, 6}, {5.834, 5.831, 5.838, 5.831, 5.839, 5.833}},
    {"ffn_down", {7, 6, 6, 6, 6, 6}, {6.691, 5.761, 5.772, 5.757, 5.756, 5.764}},
};

// The layer profile of a role, or null.
const RoleLayers* LayersOf(std::string_view role) {
  for (const RoleLayers& r : kStories3MLayers) {
    if (role == r.role) return &r;
  }
  return nullptr;
}

// The stories3M layer whose profile layer `layer` of `layers` takes: the same relative depth.
size_t ProfileLayer(int layer, int layers) {
  return std::min(kProfileLayers - 1, static_cast<size_t>(layer) * kProfileLayers /
                                          static_cast<size_t>(std::max(1, layers)));
}

// N of "blk.N.<role>.weight" (0 for a tensor outside the layers).
int MatrixLayer(std::string_view name) {
  if (!name.starts_with("blk.")) return 0;
  int n = 0;
  for (size_t i = 4; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i)
    n = 10 * n + (name[i] - '0');
  return n;
}

// Entropy of a Gaussian with standard deviation sigma (in units of the INT8 values) rounded to the
// nearest of the levels +-t[k] (increasing; t[0] = 0 or, midrise, above 0) and clipped to
// [-t.back(), t.back()].
double LevelGaussianEntropy(double sigma, const std::vector<double>& t) {
  double h = 0;
  auto cdf = [&](double x) { return 0.5 * std::erfc(-x / (sigma * std::sqrt(2.0))); };
  const size_t n = t.size();
  const bool zero = t[0] == 0;  // a zero level: its cell spans both signs
  auto cell = [&](size_t k) {   // P(|z| rounds to t[k]) for one sign (k = 0 with a zero: both)
    const double hi = k + 1 == n ? 1.0 : cdf(0.5 * (t[k] + t[k + 1]));
    const double lo = k > 0 ? cdf(0.5 * (t[k - 1] + t[k])) : zero ? 1.0 - cdf(0.5 * t[1]) : 0.5;
    return hi - lo;
  };
  for (size_t k = 0; k < n; ++k) {
    const double p = cell(k);
    if (p > 0) h -= (k == 0 && zero ? 1.0 : 2.0) * p * std::log2(p);
  }
  return h;
}

// A counter-based generator (SplitMix64) so rows can be drawn in parallel reproducibly.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Fills a matrix: row r Gaussian(0, sigma) clipped at k[r] sigma, one entry at +-k[r] sigma.
void FillMatrix(std::vector<float>& w, size_t rows, size_t cols, const std::vector<double>& clips,
                float sigma, uint64_t seed, ThreadPool& pool) {
  pool.ParallelFor(static_cast<int64_t>(rows), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const double k = clips[static_cast<size_t>(r)];
      uint64_t s = Mix(seed ^ static_cast<uint64_t>(r) * 0x2545F4914F6CDD1Dull);
      float* row = w.data() + static_cast<size_t>(r) * cols;
      for (size_t c = 0; c < cols; c += 2) {  // Box-Muller pairs
        s = Mix(s);
        const double u1 = (static_cast<double>(s >> 11) + 0.5) * 0x1.0p-53;
        s = Mix(s);
        const double u2 = static_cast<double>(s >> 11) * 0x1.0p-53;
        const double rad = std::sqrt(-2.0 * std::log(u1));
        const double z0 = std::clamp(rad * std::cos(2 * M_PI * u2), -k, k);
        const double z1 = std::clamp(rad * std::sin(2 * M_PI * u2), -k, k);
        row[c] = static_cast<float>(z0) * sigma;
        if (c + 1 < cols) row[c + 1] = static_cast<float>(z1) * sigma;
      }
      s = Mix(s);
      row[s % cols] = static_cast<float>((s >> 63) ? k : -k) * sigma;
    }
  });
}

}  // namespace

GroupProfile SynthGroupProfile(std::string_view role, size_t rows) {
  GroupProfile p;
  const RoleGroups* rg = GroupsOf(role);
  if (rg == nullptr || rows == 0) return p;
  // The profile's 16 groups spread over the groups the rows make.
  p.group_rows = internal::RowsPerGroup(rows, kProfileGroups);
  const size_t groups = internal::GroupCount(rows, p.group_rows);
  for (size_t g = 0; g < groups; ++g) {
    const size_t k = g * kProfileGroups / groups;
    p.bits.push_back(rg->bits[k]);
    p.entropy.push_back(rg->entropy[k]);
  }
  return p;
}

std::vector<std::string> SynthShapes() {
  std::vector<std::string> v;
  for (const Shape& s : kShapes) v.push_back(s.name);
  return v;
}

double ClipForEntropy(double bits, int width, double level_shape) {
  std::vector<double> t;  // the width's level magnitudes (uniform: 0..MaxCode, 127 at 8 bits)
  if (UsesLevels(width, level_shape)) {
    for (uint8_t v : LevelTable(width, level_shape)) t.push_back(v);
  } else {
    for (int k = 0; k <= (width >= 8 ? 127 : MaxCode(width)); ++k) t.push_back(k);
  }
  // Entropy decreases as K grows (codes narrower); bisect on log K.
  double lo = std::log(0.5), hi = std::log(200.0);
  for (int i = 0; i < 80; ++i) {
    const double mid = 0.5 * (lo + hi);
    const double h = LevelGaussianEntropy(t.back() / std::exp(mid), t);
    if (h > bits) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return std::exp(0.5 * (lo + hi));
}

Status Synthesize(const SynthOptions& o) {
  const Shape* sh = nullptr;
  std::string names;
  for (const Shape& s : kShapes) {
    if (o.shape == s.name) sh = &s;
    names += (names.empty() ? "" : ", ") + std::string(s.name);
  }
  if (sh == nullptr) {
    return InvalidArgumentError("--shape '" + o.shape + "': expected one of " + names);
  }
  if (!(o.entropy_bits >= 1.0 && o.entropy_bits <= 7.9)) {
    return InvalidArgumentError("--entropy: expected bits per weight in [1, 7.9]");
  }
  if (o.widths != "int8" && o.widths != "stories3m") {
    return InvalidArgumentError("--widths '" + o.widths + "': expected int8 or stories3m");
  }
  const bool profiled = o.widths == "stories3m";
  const double k = ClipForEntropy(o.entropy_bits);
  ThreadPool pool(std::max(1, o.threads));
  GgufWriter w;
  const std::string a = std::string(sh->arch) + ".";
  w.SetString("general.architecture", sh->arch);
  w.SetString("general.name", std::string("synthetic-") + sh->name);
  w.SetBool("dcomp.synthetic", true);
  if (profiled) {
    w.SetF32("dcomp.synthetic.level_shape", static_cast<float>(kStories3MLevelShape));
    w.SetU32("dcomp.synthetic.hadamard_inputs", kStories3MHadamardInputs);
    // The token matrices: the width of their widest group, and each group's.
    for (const char* role : {"token_embd", "output"}) {
      const GroupProfile g = SynthGroupProfile(role, static_cast<size_t>(sh->vocab));
      w.SetU32(std::string("dcomp.synthetic.bits.") + role,
               static_cast<uint32_t>(*std::max_element(g.bits.begin(), g.bits.end())));
      w.SetI32Array(std::string("dcomp.synthetic.group_bits.") + role, g.bits);
    }
    for (const RoleLayers& l : kStories3MLayers) {
      std::vector<int32_t> bits;
      for (int layer = 0; layer < sh->layers; ++layer)
        bits.push_back(l.bits[ProfileLayer(layer, sh->layers)]);
      w.SetI32Array(std::string("dcomp.synthetic.layer_bits.") + l.role, bits);
    }
  } else {
    w.SetF32("dcomp.synthetic.code_entropy_bits", static_cast<float>(o.entropy_bits));
  }
  w.SetU32(a + "embedding_length", static_cast<uint32_t>(sh->dim));
  w.SetU32(a + "feed_forward_length", static_cast<uint32_t>(sh->hidden));
  w.SetU32(a + "block_count", static_cast<uint32_t>(sh->layers));
  w.SetU32(a + "attention.head_count", static_cast<uint32_t>(sh->heads));
  w.SetU32(a + "attention.head_count_kv", static_cast<uint32_t>(sh->kv_heads));
  w.SetU32(a + "context_length", static_cast<uint32_t>(sh->ctx));
  w.SetF32(a + "rope.freq_base", sh->rope_theta);
  w.SetF32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (sh->sliding_window > 0) {
    w.SetU32(a + "attention.sliding_window", static_cast<uint32_t>(sh->sliding_window));
  }
  if (sh->head_dim > 0) {
    w.SetU32(a + "attention.key_length", static_cast<uint32_t>(sh->head_dim));
    w.SetU32(a + "attention.value_length", static_cast<uint32_t>(sh->head_dim));
  }
  // A SentencePiece-style vocabulary: control tokens, the 256 byte tokens, then filler pieces.
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    tokens.push_back(buf);
    types.push_back(6);
  }
  while (static_cast<int>(tokens.size()) < sh->vocab) {
    tokens.push_back("\xE2\x96\x81syn" + std::to_string(tokens.size()));
    types.push_back(1);
  }
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetF32Array("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
  w.SetI32Array("tokenizer.ggml.token_type", types);
  w.SetU32("tokenizer.ggml.bos_token_id", 1);
  w.SetU32("tokenizer.ggml.eos_token_id", 2);
  w.SetU32("tokenizer.ggml.unknown_token_id", 0);

  uint64_t seed = o.seed;
  const float sigma = 0.02f;
  auto matrix = [&](const std::string& name, size_t rows, size_t cols) -> Status {
    std::vector<float> m(rows * cols);
    std::vector<double> clips(rows, k);
    const GroupProfile g = profiled ? SynthGroupProfile(MatrixRole(name), rows) : GroupProfile();
    if (g.group_rows > 0) {  // each group of rows at its width and entropy
      std::vector<double> group_clip;
      for (size_t j = 0; j < g.bits.size(); ++j)
        group_clip.push_back(ClipForEntropy(g.entropy[j], g.bits[j], kStories3MLevelShape));
      for (size_t r = 0; r < rows; ++r) clips[r] = group_clip[r / g.group_rows];
    } else if (const RoleLayers* l = profiled ? LayersOf(MatrixRole(name)) : nullptr) {
      // The profile layer's width and entropy; its largest code is the width's.
      const size_t p = ProfileLayer(MatrixLayer(name), sh->layers);
      clips.assign(rows, ClipForEntropy(l->entropy[p], l->bits[p], kStories3MLevelShape));
    }
    FillMatrix(m, rows, cols, clips, sigma, Mix(++seed), pool);
    return w.AddTensor(name, static_cast<int64_t>(rows), static_cast<int64_t>(cols),
                       GgmlType::kQ8_0, m);
  };
  auto norm = [&](const std::string& name, int64_t n) -> Status {
    std::vector<float> v(static_cast<size_t>(n), 1.0f);
    return w.AddTensor(name, 1, n, GgmlType::kF32, v);
  };
  // The tensors in the order every model stores them (the layer schema's).
  ModelConfig c;
  c.dim = sh->dim;
  c.hidden_dim = sh->hidden;
  c.n_layers = sh->layers;
  c.n_heads = sh->heads;
  c.n_kv_heads = sh->kv_heads;
  c.head_dim = sh->head_dim > 0 ? sh->head_dim : sh->dim / sh->heads;
  c.qk_norm = std::string(sh->arch) == "qwen3" || std::string(sh->arch) == "gemma3";
  c.post_norms = std::string(sh->arch) == "gemma3";
  c.vocab_size = sh->vocab;
  c.tied_output = sh->tied;
  for (const CanonicalTensor& t : CanonicalTensors(c)) {
    RETURN_IF_ERROR(t.rows == 1
                        ? norm(t.name, t.cols)
                        : matrix(t.name, static_cast<size_t>(t.rows), static_cast<size_t>(t.cols)));
  }
  return w.Write(o.output);
}

}  // namespace dcomp::packer
