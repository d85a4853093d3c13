// Hostile and malformed input: every case ends in a clear error naming the problem, never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "base/file.h"
#include "engine/generate.h"
#include "engine/gguf.h"
#include "engine/model_file.h"
#include "tests/util/test_paths.h"
#include "tests/util/tiny_model.h"

namespace dcomp {
namespace {

std::string Tmp(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string TinyGguf(const testing::TinyModelOptions& o, const std::string& name) {
  const std::string p = Tmp(name);
  Status s = testing::WriteTinyModel(p, o);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return p;
}

void ExpectError(const Result<std::unique_ptr<ModelFile>>& r, StatusCode code,
                 const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().ToString();
}

TEST(GgufTest, WriterReaderRoundTripAllValueTypes) {
  GgufWriter w;
  w.SetString("s", "h\xC3\xA9llo");
  w.SetU32("u", 7);
  w.SetI32("i", -3);
  w.SetF32("f", 0.25f);
  w.SetBool("b", true);
  w.SetStringArray("sa", {"a", "", "c"});
  w.SetI32Array("ia", {1, -2});
  std::vector<float> t = {1.0f, -2.5f, 0.0f, 3.0f};
  ASSERT_TRUE(w.AddTensor("v", 1, 4, GgmlType::kF32, t).ok());
  ASSERT_TRUE(w.AddTensor("h", 2, 2, GgmlType::kF16, t).ok());
  const std::string p = Tmp("roundtrip.gguf");
  ASSERT_TRUE(w.Write(p).ok());
  auto g = GgufFile::Open(p);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->version(), 3u);
  EXPECT_EQ(*(*g)->GetString("s"), "h\xC3\xA9llo");
  EXPECT_EQ(*(*g)->GetInt("u"), 7);
  EXPECT_EQ(*(*g)->GetInt("i"), -3);
  EXPECT_EQ(*(*g)->GetFloat("f"), 0.25);
  EXPECT_TRUE(*(*g)->GetBool("b"));
  EXPECT_EQ((*(*g)->GetArray("sa", GgufType::kString))->size(), 3u);
  EXPECT_FALSE((*g)->GetArray("sa", GgufType::kInt32).ok());  // wrong element type named
  EXPECT_EQ((*g)->GetInt("s").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*g)->GetInt("missing").status().code(), StatusCode::kNotFound);
  const GgufTensorInfo* h = (*g)->FindTensor("h");
  ASSERT_NE(h, nullptr);
  std::vector<float> back(4);
  ASSERT_TRUE(GgmlToF32(h->type, h->data, 4, back.data()).ok());
  EXPECT_EQ(back, t);  // exactly representable in f16
}

// A synthetic model's widths per group of rows (dcomp synth) are packed codes, 4..7 bits.
TEST(GgufTest, SyntheticGroupWidthsOutOfRangeAreRefusedByKey) {
  testing::TinyModelOptions o;
  o.synthetic = true;
  o.synthetic_group_bits["token_embd"] = {7, 6, 9};
  ExpectError(OpenModelFile(TinyGguf(o, "group_bits_wide.gguf")), StatusCode::kInvalidArgument,
              "dcomp.synthetic.group_bits.token_embd[2] = 9, expected a packed code width in 4..7");
  o.synthetic_group_bits["token_embd"] = {};
  ExpectError(OpenModelFile(TinyGguf(o, "group_bits_empty.gguf")), StatusCode::kInvalidArgument,
              "dcomp.synthetic.group_bits.token_embd has 0 widths");
  o.synthetic_group_bits["token_embd"] = {7, 6, 6, 4};
  auto ok = OpenModelFile(TinyGguf(o, "group_bits_ok.gguf"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->config().synthetic_group_bits.at("token_embd"), std::vector<int>({7, 6, 6, 4}));
}

// Widths per layer (dcomp synth): one per layer, each a code width of 4..8 bits.
TEST(GgufTest, SyntheticLayerWidthsAreCheckedByKey) {
  testing::TinyModelOptions o;
  o.synthetic = true;
  const size_t layers = static_cast<size_t>(o.layers);
  o.synthetic_layer_bits["ffn_up"] = std::vector<int32_t>(layers + 1, 6);
  ExpectError(OpenModelFile(TinyGguf(o, "layer_bits_count.gguf")), StatusCode::kInvalidArgument,
              "dcomp.synthetic.layer_bits.ffn_up has " + std::to_string(layers + 1) +
                  " widths, expected one per layer (" + std::to_string(layers) + ")");
  o.synthetic_layer_bits["ffn_up"] = std::vector<int32_t>(layers, 7);
  o.synthetic_layer_bits["ffn_up"].back() = 3;
  ExpectError(OpenModelFile(TinyGguf(o, "layer_bits_narrow.gguf")), StatusCode::kInvalidArgument,
              "dcomp.synthetic.layer_bits.ffn_up[" + std::to_string(layers - 1) +
                  "] = 3, expected a code width in 4..8");
  o.synthetic_layer_bits["ffn_up"].back() = 8;
  auto ok = OpenModelFile(TinyGguf(o, "layer_bits_ok.gguf"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->config().synthetic_layer_bits.at("ffn_up").back(), 8);
}

TEST(GgufTest, TruncationAtEveryByteIsAnError) {
  testing::TinyModelOptions o;
  o.dim = 8;
  o.hidden = 16;
  o.heads = 2;
  o.kv_heads = 1;
  o.vocab = 8;
  o.layers = 1;
  const std::string good = TinyGguf(o, "trunc_src.gguf");
  const std::string bytes = *ReadFileToString(good);
  ASSERT_TRUE(OpenModelFile(good).ok());
  const std::string p = Tmp("trunc.gguf");
  for (size_t n = 0; n < bytes.size(); ++n) {
    WriteBytes(p, bytes.substr(0, n));
    auto r = OpenModelFile(p);
    ASSERT_FALSE(r.ok()) << "truncated to " << n << " of " << bytes.size() << " bytes";
    const StatusCode c = r.status().code();
    ASSERT_TRUE(c == StatusCode::kDataLoss || c == StatusCode::kInvalidArgument)
        << n << ": " << r.status().ToString();
  }
}

TEST(GgufTest, RandomBitFlipsNeverCrash) {
  testing::TinyModelOptions o;
  o.layers = 1;
  const std::string bytes = *ReadFileToString(TinyGguf(o, "flip_src.gguf"));
  const std::string p = Tmp("flip.gguf");
  std::mt19937 rng(123);
  int errors = 0;
  for (int i = 0; i < 400; ++i) {
    std::string b = bytes;
    // Flip in the header/metadata/tensor-info region, where parsing decisions are made.
    const size_t pos = rng() % std::min<size_t>(b.size(), 4096);
    b[pos] = static_cast<char>(b[pos] ^ (1u << (rng() % 8)));
    WriteBytes(p, b);
    auto r = OpenModelFile(p);
    if (!r.ok()) {
      ++errors;
      EXPECT_FALSE(r.status().message().empty());
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(GgufTest, BadMagicAndVersions) {
  const std::string p = Tmp("magic.gguf");
  WriteBytes(p, std::string("GGUX\x03\0\0\0", 8) + std::string(16, '\0'));
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "");  // not GGUF, not llama2.c
  for (uint32_t v : {1u, 4u}) {
    std::string b = "GGUF";
    b.append(reinterpret_cast<const char*>(&v), 4);
    b.append(16, '\0');
    WriteBytes(p, b);
    ExpectError(OpenModelFile(p), StatusCode::kUnimplemented, "version " + std::to_string(v));
  }
  WriteBytes(p, "");
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "too short");
}

TEST(GgufTest, ImplausibleCountsAndBadValues) {
  const std::string p = Tmp("counts.gguf");
  std::string b = "GGUF";
  uint32_t v = 3;
  uint64_t nt = 0, nkv = 1ull << 40;
  b.append(reinterpret_cast<const char*>(&v), 4);
  b.append(reinterpret_cast<const char*>(&nt), 8);
  b.append(reinterpret_cast<const char*>(&nkv), 8);
  WriteBytes(p, b);
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "implausible");
  // One key whose string length runs past the end of the file.
  nkv = 1;
  std::string c = b.substr(0, 16);
  c.append(reinterpret_cast<const char*>(&nkv), 8);
  uint64_t len = 1ull << 50;
  c.append(reinterpret_cast<const char*>(&len), 8);
  WriteBytes(p, c);
  ExpectError(OpenModelFile(p), StatusCode::kDataLoss, "truncated");
  // A tensor count under the sanity bound that the file's remaining bytes cannot hold is refused
  // before the tensor table is allocated (found by fuzz_model_file: 16M tensors in 60 bytes).
  nt = (1ull << 24) - 1;
  nkv = 0;
  std::string d = b.substr(0, 8);
  d.append(reinterpret_cast<const char*>(&nt), 8);
  d.append(reinterpret_cast<const char*>(&nkv), 8);
  d.append(40, '\0');
  WriteBytes(p, d);
  ExpectError(OpenModelFile(p), StatusCode::kDataLoss, "16777215 tensors but only 40 bytes");
}

TEST(GgufTest, UnknownArchitectureIsNamed) {
  GgufWriter w;
  w.SetString("general.architecture", "gptj");
  const std::string p = Tmp("arch.gguf");
  ASSERT_TRUE(w.Write(p).ok());
  ExpectError(OpenModelFile(p), StatusCode::kUnimplemented, "architecture 'gptj'");
}

TEST(GgufTest, VocabularyOnlyFileIsNotAModel) {
  testing::TinyModelOptions o;
  o.no_tensors = true;
  ExpectError(OpenModelFile(TinyGguf(o, "vocab_only.gguf")), StatusCode::kInvalidArgument,
              "no tensors");
  // ...but its tokenizer loads.
  EXPECT_TRUE(LoadTokenizerSpec(Tmp("vocab_only.gguf")).ok());
}

TEST(GgufTest, ShapeMismatchAndMissingTensorAreNamed) {
  testing::TinyModelOptions o;
  o.wrong_ffn_rows = 40;
  ExpectError(OpenModelFile(TinyGguf(o, "shape.gguf")), StatusCode::kInvalidArgument,
              "'blk.0.ffn_gate.weight' has shape [40 x 32], expected [48 x 32]");
  testing::TinyModelOptions m;
  m.drop_attn_v = true;
  ExpectError(OpenModelFile(TinyGguf(m, "missing.gguf")), StatusCode::kInvalidArgument,
              "missing tensor 'blk.1.attn_v.weight'");
}

// Rewrites the ggml type of tensor `name` in a GGUF file written by GgufWriter.
void PatchTensorType(const std::string& path, const std::string& name, uint32_t type) {
  std::string bytes = *ReadFileToString(path);
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  uint32_t n_dims;
  std::memcpy(&n_dims, &bytes[at + name.size()], 4);
  std::memcpy(&bytes[at + name.size() + 4 + 8 * n_dims], &type, 4);
  WriteBytes(path, bytes);
}

TEST(GgufTest, UnreadableTensorTypeAndBadRowLengthAreNamed) {
  testing::TinyModelOptions o;
  const std::string p = TinyGguf(o, "types.gguf");
  ASSERT_TRUE(OpenModelFile(p).ok());
  PatchTensorType(p, "blk.1.attn_q.weight", 16);  // IQ2_XXS: known to ggml, not read by dcomp
  ExpectError(OpenModelFile(p), StatusCode::kUnimplemented,
              "tensor 'blk.1.attn_q.weight' has type IQ2_XXS, which dcomp cannot read");
  PatchTensorType(p, "blk.1.attn_q.weight", 12);  // Q4_K needs rows of 256
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument,
              "tensor 'blk.1.attn_q.weight': row of 32 elements is not a multiple of Q4_K's "
              "block of 256");
}

TEST(GgufTest, BadHeadGeometryIsNamed) {
  testing::TinyModelOptions o;
  o.arch = "qwen3";
  o.head_dim = 15;  // odd
  ExpectError(OpenModelFile(TinyGguf(o, "odd_head.gguf")), StatusCode::kInvalidArgument,
              "head_dim = 15, expected an even number");
  testing::TinyModelOptions l;
  l.heads = 5;  // 32 is not a multiple of 5, and no key_length
  l.kv_heads = 5;
  ExpectError(OpenModelFile(TinyGguf(l, "heads.gguf")), StatusCode::kInvalidArgument,
              "embedding_length = 32 is not a multiple of head_count = 5");
}

TEST(GgufTest, Gemma3WithoutSlidingWindowIsNamed) {
  testing::TinyModelOptions o;
  o.arch = "gemma3";
  o.sliding_window = 0;
  ExpectError(OpenModelFile(TinyGguf(o, "g3.gguf")), StatusCode::kInvalidArgument,
              "gemma3.attention.sliding_window = 0, expected 1..1048576");
}

TEST(GgufTest, BadRopeScalingIsNamed) {
  testing::TinyModelOptions o;
  o.rope_scaling_type = "yarn";
  o.rope_scaling_factor = 4;
  ExpectError(OpenModelFile(TinyGguf(o, "yarn.gguf")), StatusCode::kUnimplemented,
              "rope.scaling.type 'yarn' is not supported");
  o.rope_scaling_type = "llama3";
  ExpectError(OpenModelFile(TinyGguf(o, "l3.gguf")), StatusCode::kInvalidArgument,
              "llama.rope.scaling.original_context_length is required by rope scaling 'llama3'");
  o.rope_scaling_type = "linear";
  o.rope_scaling_factor = -2;
  ExpectError(OpenModelFile(TinyGguf(o, "lin.gguf")), StatusCode::kInvalidArgument,
              "llama.rope.scaling.factor");
  testing::TinyModelOptions f;
  f.rope_freqs = {1, 2, 3};  // head_dim 8 needs 4
  ExpectError(OpenModelFile(TinyGguf(f, "rf.gguf")), StatusCode::kInvalidArgument,
              "rope_freqs.weight");
  f.rope_freqs = {1, 2, 0, 4};
  ExpectError(OpenModelFile(TinyGguf(f, "rf0.gguf")), StatusCode::kInvalidArgument,
              "RoPE frequency factor");
}

TEST(Llama2cTest, TruncatedAndGarbageCheckpoints) {
  const std::string src = testing::SourceDir() + "/models/stories260K.bin";
  const std::string bytes = *ReadFileToString(src);
  const std::string p = Tmp("stories_trunc.bin");
  // Copy the tokenizer beside it so only the checkpoint is at fault.
  WriteBytes(Tmp("tok512.bin"), *ReadFileToString(testing::SourceDir() + "/models/tok512.bin"));
  for (size_t n : {size_t{10}, size_t{28}, bytes.size() / 2, bytes.size() - 1}) {
    WriteBytes(p, bytes.substr(0, n));
    auto r = OpenModelFile(p);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  }
  WriteBytes(p, bytes.substr(0, bytes.size() - 4));
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "does not match the header");
  WriteBytes(p, std::string(4096, '\x7f'));
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "model config");
  ExpectError(OpenModelFile("/nonexistent/model.bin"), StatusCode::kNotFound,
              "/nonexistent/model.bin");
}

TEST(Llama2cTest, MissingTokenizerIsExplained) {
  const std::string dir = Tmp("notok");
  std::filesystem::create_directories(dir);
  const std::string p = dir + "/model.bin";
  WriteBytes(p, *ReadFileToString(testing::SourceDir() + "/models/stories260K.bin"));
  ExpectError(OpenModelFile(p), StatusCode::kInvalidArgument, "--tokenizer");
  EXPECT_TRUE(OpenModelFile(p, testing::SourceDir() + "/models/tok512.bin").ok());
}

TEST(Llama2cTest, WrongTokenizerForModel) {
  DCOMP_REQUIRE_SHARED(tok4096, "models/llama2c/tok4096.bin");
  ExpectError(OpenModelFile(testing::SourceDir() + "/models/stories260K.bin", tok4096),
              StatusCode::kInvalidArgument, "tok4096.bin");
}

TEST(GenerateTest, RequestValidation) {
  auto f = OpenModelFile(testing::SourceDir() + "/models/stories260K.bin");
  ASSERT_TRUE(f.ok());
  auto tok = Tokenizer::Create((*f)->tokenizer());
  auto w = InMemoryWeights::Load(**f, WeightFormat::kW8A8);
  ThreadPool pool(1);
  auto t = Transformer::Create(w->get(), &pool, 8);
  GenerateRequest req;
  req.prompt = "";
  auto r = Generate(**t, **tok, req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("prompt is empty"), std::string::npos);
  req.prompt = "Once upon a time there was a long prompt";
  r = Generate(**t, **tok, req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("context length is 8"), std::string::npos);
  req.prompt = "Hi";
  req.max_tokens = 0;
  EXPECT_FALSE(Generate(**t, **tok, req).ok());
  req.max_tokens = 100;
  req.sampling.temperature = -1.0f;
  r = Generate(**t, **tok, req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("temperature"), std::string::npos);
  req.sampling.temperature = 0.0f;
  r = Generate(**t, **tok, req);  // stops at the context end, no error
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stop_reason, "context");
  EXPECT_EQ(r->prompt_ids.size() + r->generated_ids.size(), 9u);
}

}  // namespace
}  // namespace dcomp

namespace dcomp {
namespace {

TEST(GgufTest, HalfAndBFloat16Conversion) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xC0A0), -5.0f);
  // A BF16 tensor through the generic dequantizer.
  const uint16_t raw[3] = {0x3F80, 0x4000, 0xBF00};
  float out[3];
  ASSERT_TRUE(GgmlToF32(static_cast<uint32_t>(GgmlType::kBF16),
                        reinterpret_cast<const uint8_t*>(raw), 3, out)
                  .ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], -0.5f);
}

TEST(ModelConfigTest, HadamardInputsAreChecked) {
  ModelConfig c;  // a valid config of one small layer
  c.arch = "llama";
  c.n_kv_heads = c.n_heads = 4;
  c.head_dim = 16;
  c.dim = c.n_heads * c.head_dim;
  c.hidden_dim = 2 * c.dim;
  c.n_layers = 1;
  c.vocab_size = c.context_length = 32;
  c.hadamard_inputs = 0b1111;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate().message();
  c.hadamard_inputs = 1u << 5;
  EXPECT_EQ(
      c.Validate().message(),
      "model config: hadamard_inputs = 32, expected a mask of bits 0..4 (the kinds of input)");
  c.hadamard_inputs = 1u << 4;  // the output's input, but the output is the embedding
  EXPECT_NE(c.Validate().message().find("the embedding lookup reads untransformed"),
            std::string::npos);
  c.tied_output = false;
  EXPECT_TRUE(c.Validate().ok());
}

}  // namespace
}  // namespace dcomp
