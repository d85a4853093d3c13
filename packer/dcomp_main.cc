// dcomp: the offline tool. Subcommands: pack, inspect, synth, generate, eval, chat, tokenize
// (in-process, no daemon).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "base/file.h"
#include "base/flags.h"
#include "base/json.h"
#include "base/page_buffer.h"
#include "base/thread_pool.h"
#include "engine/chat_template.h"
#include "engine/dcm_model.h"
#include "engine/generate.h"
#include "engine/local_model.h"
#include "engine/model_file.h"
#include "engine/transformer.h"
#include "engine/weights.h"
#include "kernels/kernels.h"
#include "packer/inspect.h"
#include "packer/pack.h"
#include "packer/synth.h"
#include "runtime/served_model.h"
#include "runtime/streaming_weights.h"
#include "storage/rans.h"

namespace dcomp {
namespace {

constexpr const char* kUsage =
    R"(usage: dcomp COMMAND [options]   (dcomp COMMAND --help: its options; dcomp --version)

commands:
  pack IN OUT.dcm [--calib FILE] [--block-size B] [--codec auto|rans|zstd|raw] [--zstd-level L]
       [--min-decode-speed MBPS] [--min-coding-gain F] [--alpha auto|X] [--prune RATIO] [--max-ppl-increase PCT]
       [--no-scaling] [--no-rate-alloc] [--no-hadamard] [--rounding gptq|nearest]
       [--calib-tokens N] [--calib-seed N]
  inspect FILE.dcm [--verify] [--json]
  synth --shape tinyllama-1.1b|llama-3.2-1b|qwen3-0.6b|gemma-3-1b OUT.gguf [--widths stories3m|int8] [--entropy BITS]
        [--seed S]
  generate MODEL --prompt TEXT [-n N] [--temperature T] [--seed S] [--weights f32|w8a8] [--json]
  eval MODEL --text FILE [--weights f32|w8a8] [--json]
    (.dcm models: --budget BYTES|PCT% [--policy P] [--decode auto|inline|ahead]
     [--reader auto|io_uring|pread] [--direct]
     stream layers from flash under a RAM budget; see docs/runtime.md)
  chat MODEL [--message TEXT] [--system TEXT] [--chat-template FAMILY] [-n N] [sampling] [--json]
    (an instruct model's chat, its template recognised from the model file; without --message,
     a conversation read line by line from standard input)
  tokenize MODEL --text TEXT [--no-bos] [--json]

MODEL is a .dcm container, a .gguf file or a llama2.c .bin checkpoint (with --tokenizer FILE, or tok<vocab>.bin /
tokenizer.bin beside it). Common options: --threads N, --ctx N (context length; default: the
model's), --tokenizer FILE. DCOMP_KERNELS=ref forces the scalar kernels.
)";

void AddModelFlags(Flags& f) {
  f.Value("tokenizer", "llama2.c tokenizer.bin (for .bin checkpoints)")
      .Value("threads", "threads (default: all cores)")
      .Value("ctx", "context length (default: the model's)")
      .Value("weights", "f32 | w8a8 (default w8a8)")
      .Value("kv-cache", "f32 | int8 (default f32): how the KV cache stores keys and values")
      .Switch("json", "print one JSON object")
      .Switch("verbose", "log the model and kernel choice to stderr")
      .Value("budget", ".dcm: RAM budget, BYTES[K|M|G|KiB|MiB|GiB|KB|MB|GB] or PCT% of INT8 size")
      .Value("policy",
             ".dcm streaming: adaptive | all-compressed | stream-all | static-split | "
             "all-decoded | all-packed (default adaptive)")
      .Value("decode",
             ".dcm streaming: where compressed layers are decoded: inline (inside the matrix "
             "products) | ahead (decode pool) | auto (default: the faster estimate)")
      .Value("reader", ".dcm streaming: auto | io_uring | pread (default auto)")
      .Switch("direct", ".dcm streaming: read with O_DIRECT");
}

// Parses a command's arguments, with --help / -h: prints "usage: dcomp SYNOPSIS" and the options
// to stdout and returns true (the command then does nothing else).
Result<bool> ParseCommand(Flags& f, const std::vector<std::string>& args, const char* synopsis) {
  f.Switch("help", "this text");
  std::vector<std::string> a;
  for (const std::string& s : args) a.push_back(s == "-h" ? "--help" : s);
  const Status parsed = f.Parse(a);
  if (f.IsSet("help")) {
    std::printf("usage: dcomp %s\n\noptions:\n%s", synopsis, f.Help().c_str());
    return true;
  }
  RETURN_IF_ERROR(parsed);
  return false;
}

using Loaded = runtime::ServedModel;

void PrintRuntime(const Loaded& l, bool json, JsonWriter* w) {
  if (l.runtime == nullptr) return;
  if (json) {
    w->BeginObjectIn("runtime");
    l.runtime->ToJson(*w);
    w->EndObject();
  } else {
    const runtime::RuntimeStats st = l.runtime->stats();
    std::fprintf(stderr, "[runtime: %s; budget %s; peak RSS %s; reader %s; %llu replans]\n",
                 l.runtime->plan().Summary().c_str(), FormatBytes(st.budget).c_str(),
                 FormatBytes(runtime::PeakRssBytes()).c_str(), st.reader_backend.c_str(),
                 static_cast<unsigned long long>(st.replans));
  }
}

Result<Loaded> LoadModel(const Flags& f, const std::string& path, int32_t max_logit_rows) {
  runtime::ServedModelOptions o;
  ASSIGN_OR_RETURN(o.format, ParseWeightFormat(f.GetOr("weights", "w8a8")));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", std::thread::hardware_concurrency()));
  if (threads < 1 || threads > 256) return InvalidArgumentError("--threads must be in 1..256");
  ASSIGN_OR_RETURN(int64_t ctx, f.GetInt("ctx", 0));
  if (ctx < 0 || ctx > (1 << 20)) return InvalidArgumentError("--ctx must be in 0..1048576");
  o.threads = static_cast<int>(threads);
  o.context_length = static_cast<int32_t>(ctx);
  o.tokenizer_path = f.GetOr("tokenizer", "");
  const bool streaming =
      f.Has("budget") || f.Has("policy") || f.Has("decode") || f.Has("reader") || f.IsSet("direct");
  if (streaming) {
    if (o.format != WeightFormat::kW8A8) {
      return InvalidArgumentError(
          "--budget/--policy/--reader stream a .dcm model: --weights must "
          "be w8a8");
    }
    o.streaming = runtime::Streaming::kRequired;
    runtime::RuntimeOptions& ro = o.runtime;
    ro.max_logit_rows = max_logit_rows;
    ASSIGN_OR_RETURN(ro.budget, ParseBudgetSpec(f.GetOr("budget", "0")));
    ASSIGN_OR_RETURN(ro.policy, runtime::ParsePolicy(f.GetOr("policy", "adaptive")));
    ASSIGN_OR_RETURN(ro.force_decode, runtime::ParseDecodeConstraint(f.GetOr("decode", "auto")));
    ASSIGN_OR_RETURN(ro.reader.backend, storage::ParseReaderBackend(f.GetOr("reader", "auto")));
    ro.reader.direct = f.IsSet("direct");
  }
  ASSIGN_OR_RETURN(const KvType kv, ParseKvType(f.GetOr("kv-cache", "f32")));
  o.runtime.kv_cache_type = kv;
  ASSIGN_OR_RETURN(Loaded l, runtime::OpenServedModel(path, o));
  l.model.model->set_kv_type(kv);
  if (f.IsSet("verbose")) {
    std::fprintf(stderr,
                 "model: %s [%s], %s weights %.1f MiB resident, kernels %s, rANS decoder %s, huge "
                 "pages %s, %d threads\n",
                 l.model.file->config().Summary().c_str(), l.model.file->format().c_str(),
                 WeightFormatName(o.format), l.model.resident_weight_bytes / 1048576.0,
                 kernels::KernelSelectionNote().c_str(), storage::RansDecoderNote().c_str(),
                 HugePageNote().c_str(), l.model.pool->num_threads());
    if (l.runtime != nullptr) {
      std::fprintf(stderr, "runtime: %s\n", l.runtime->plan().Summary().c_str());
    }
  }
  return l;
}

// Prints each piece of generated text to stdout as it comes, unless `json`.
TokenCallback PrintText(bool json) {
  return [json](int32_t, const std::string& text) {
    if (!json) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
}

void AddSamplingFlags(Flags& f) {
  f.Value("temperature", "0 = greedy (default)").Value("seed", "sampling seed (default 0)");
  f.Value("top-k", "top-k (0 = off)").Value("top-p", "top-p (1 = off)");
  f.Value("min-p", "min-p (0 = off)").Value("repetition-penalty", "1 = off");
  f.Value("stop", "stop string (repeatable): the completion ends before it");
}

// -n and the sampling flags into `req`.
Status ParseSampling(const Flags& f, int64_t default_tokens, GenerateRequest* req) {
  ASSIGN_OR_RETURN(int64_t n, f.GetInt("n", default_tokens));
  if (n < 1 || n > (1 << 20)) return InvalidArgumentError("-n must be in 1..1048576");
  req->max_tokens = static_cast<int32_t>(n);
  ASSIGN_OR_RETURN(double temp, f.GetDouble("temperature", 0.0));
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 0));
  ASSIGN_OR_RETURN(int64_t top_k, f.GetInt("top-k", 0));
  ASSIGN_OR_RETURN(double top_p, f.GetDouble("top-p", 1.0));
  ASSIGN_OR_RETURN(double min_p, f.GetDouble("min-p", 0.0));
  ASSIGN_OR_RETURN(double rep, f.GetDouble("repetition-penalty", 1.0));
  req->sampling.temperature = static_cast<float>(temp);
  req->sampling.seed = static_cast<uint64_t>(seed);
  req->sampling.top_k = static_cast<int32_t>(top_k);
  req->sampling.top_p = static_cast<float>(top_p);
  req->sampling.min_p = static_cast<float>(min_p);
  req->sampling.repetition_penalty = static_cast<float>(rep);
  req->stop = f.GetAll("stop");
  for (const std::string& s : req->stop) {
    if (s.empty()) return InvalidArgumentError("--stop: empty string");
  }
  return req->sampling.Validate();
}

Status CmdGenerate(const std::vector<std::string>& args) {
  Flags f;
  AddModelFlags(f);
  f.Value("prompt", "prompt text").Value("n", "tokens to generate (default 64)");
  AddSamplingFlags(f);
  // "-n" is accepted as a synonym of "--n".
  std::vector<std::string> a;
  for (const auto& s : args) a.push_back(s == "-n" ? "--n" : s);
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(f, a, "generate MODEL --prompt TEXT [options]: a completion, streamed"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("generate: expected one MODEL path");
  if (!f.Has("prompt")) return InvalidArgumentError("generate: --prompt TEXT is required");
  GenerateRequest req;
  req.prompt = *f.Get("prompt");
  RETURN_IF_ERROR(ParseSampling(f, 64, &req));
  ASSIGN_OR_RETURN(Loaded loaded, LoadModel(f, f.positional()[0], 1));
  LocalModel& l = loaded.model;
  const bool json = f.IsSet("json");
  if (!json) {
    std::fputs(l.tokenizer->Decode(l.tokenizer->Encode(req.prompt, false)).c_str(), stdout);
    std::fflush(stdout);
  }
  ASSIGN_OR_RETURN(GenerateResult r, Generate(*l.model, *l.tokenizer, req, PrintText(json)));
  if (!json) std::fputs(r.tail.c_str(), stdout);
  const double decode_tps = r.decode_tokens_per_second();
  if (json) {
    std::vector<int32_t> ids = r.prompt_ids;
    ids.insert(ids.end(), r.generated_ids.begin(), r.generated_ids.end());
    JsonWriter w;
    w.BeginObject()
        .IntArray("ids", ids)
        .String("text", r.text)
        .String("completion", r.completion)
        .Int("prompt_tokens", static_cast<int64_t>(r.prompt_ids.size()))
        .Int("generated_tokens", static_cast<int64_t>(r.generated_ids.size()))
        .String("stop_reason", r.stop_reason)
        .Double("prefill_seconds", r.prefill_seconds)
        .Double("decode_tokens_per_second", decode_tps);
    PrintRuntime(loaded, true, &w);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr,
                 "[%zu prompt tokens in %.2f ms, %zu generated at %.1f tokens/s, stop: %s]\n",
                 r.prompt_ids.size(), r.prefill_seconds * 1e3, r.generated_ids.size(), decode_tps,
                 r.stop_reason.c_str());
    PrintRuntime(loaded, false, nullptr);
  }
  return Status::Ok();
}

Status CmdEval(const std::vector<std::string>& args) {
  Flags f;
  AddModelFlags(f);
  f.Value("text", "evaluation text file (stories separated by <|endoftext|>)");
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(
          f, args,
          "eval MODEL --text FILE [options]: perplexity of stories separated by <|endoftext|>"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("eval: expected one MODEL path");
  if (!f.Has("text")) return InvalidArgumentError("eval: --text FILE is required");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(*f.Get("text")));
  ASSIGN_OR_RETURN(Loaded loaded, LoadModel(f, f.positional()[0], Transformer::kMaxBatch));
  LocalModel& l = loaded.model;
  auto t0 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(PerplexityResult r, EvalPerplexity(*l.model, *l.tokenizer, text));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (f.IsSet("json")) {
    JsonWriter w;
    w.BeginObject()
        .Int("tokens", r.tokens)
        .Double("mean_nll", r.mean_nll)
        .Double("ppl", r.ppl)
        .Int("stories", r.stories)
        .Int("context", l.model->context_length())
        .String("weights", f.GetOr("weights", "w8a8"))
        .Double("seconds", secs);
    PrintRuntime(loaded, true, &w);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("stories %lld, tokens %lld, mean NLL %.6f nats/token, perplexity %.4f (%.1f s)\n",
                static_cast<long long>(r.stories), static_cast<long long>(r.tokens), r.mean_nll,
                r.ppl, secs);
    PrintRuntime(loaded, false, nullptr);
  }
  return Status::Ok();
}

Status CmdPack(const std::vector<std::string>& args) {
  Flags f;
  f.Value("tokenizer", "llama2.c tokenizer.bin (for .bin checkpoints)")
      .Value("threads", "threads (default: all cores)")
      .Value("calib", "calibration text (default: text sampled from the model itself)")
      .Value("calib-tokens",
             "calibration tokens (default 8192; the width trials measure KL on up to 4096)")
      .Value("calib-seed", "self-generated calibration: the sampler's seed (default 20240601)")
      .Value("block-size", "raw bytes per block, whole rows (default 131072)")
      .Value("codec", "auto | rans | zstd | raw (default auto: the smallest fast enough)")
      .Value("zstd-level", "zstd level (default 19)")
      .Value("min-decode-speed", "auto: MB/s a codec must decode a block at (default 500)")
      .Value("min-coding-gain",
             "codes below 8 bits: entropy-code a block only if that saves this fraction of its "
             "packed size, else store it packed (default 0.02)")
      .Value("alpha", "scaling exponent: auto | X in [0, 1] (default auto)")
      .Value("prune", "fraction of each row pruned (default 0)")
      .Value("max-ppl-increase",
             "perplexity budget over f32 on the calibration tokens, percent (default 0.95)")
      .Switch("no-scaling", "no compression-aware scaling")
      .Switch("no-rate-alloc", "no rate allocation (every step plain INT8)")
      .Switch("no-hadamard",
              "no Hadamard-transformed matrix inputs (default: the kinds of input whose 8-bit "
              "quantization the transform makes more accurate on the calibration inputs)")
      .Value("rounding",
             "codes below 8 bits: gptq (error-compensating, from the calibration inputs) | "
             "nearest (default gptq)")
      .Value("level-shape",
             "codes below 8 bits: non-uniform levels, finer near zero: round(127 sinh(A (k+1/2) / "
             "(K+1/2)) / sinh(A)) at 4-6 bits (no zero level; with --prune, k/K), three slopes "
             "at 7; 0 = uniform levels (default 2)")
      .Switch("quiet", "no progress or report");
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(f, args, "pack INPUT OUTPUT.dcm [options]: quantize and entropy-code a model"));
  if (help) return Status::Ok();
  if (f.positional().size() != 2) return InvalidArgumentError("pack: expected IN and OUT.dcm");
  packer::PackOptions o;
  o.input = f.positional()[0];
  o.output = f.positional()[1];
  o.tokenizer_path = f.GetOr("tokenizer", "");
  o.calib_path = f.GetOr("calib", "");
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", std::thread::hardware_concurrency()));
  if (threads < 1 || threads > 256) return InvalidArgumentError("--threads must be in 1..256");
  o.threads = static_cast<int>(threads);
  ASSIGN_OR_RETURN(int64_t ct, f.GetInt("calib-tokens", packer::kDefaultCalibTokens));
  if (ct < 16 || ct > (1 << 22)) return InvalidArgumentError("--calib-tokens must be in 16..4M");
  o.calib_tokens = static_cast<int>(ct);
  ASSIGN_OR_RETURN(int64_t seed,
                   f.GetInt("calib-seed", static_cast<int64_t>(packer::kDefaultCalibSeed)));
  if (seed < 0) return InvalidArgumentError("--calib-seed must be a non-negative integer");
  if (f.Has("calib-seed") && f.Has("calib")) {
    return InvalidArgumentError(
        "--calib-seed: the calibration text is given (--calib), not sampled");
  }
  o.calib_seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(int64_t bs, f.GetInt("block-size", 128 << 10));
  if (bs < 1024 || bs > (64 << 20)) {
    return InvalidArgumentError("--block-size " + std::to_string(bs) + ": expected 1024..64 MiB");
  }
  o.block_bytes = static_cast<size_t>(bs);
  o.codec = f.GetOr("codec", "auto");
  ASSIGN_OR_RETURN(int64_t zl, f.GetInt("zstd-level", 19));
  o.zstd_level = static_cast<int>(zl);
  ASSIGN_OR_RETURN(o.min_decode_mbps, f.GetDouble("min-decode-speed", 500));
  ASSIGN_OR_RETURN(o.min_coding_gain, f.GetDouble("min-coding-gain", 0.02));
  if (!(o.min_coding_gain >= 0 && o.min_coding_gain < 1)) {
    return InvalidArgumentError("--min-coding-gain " + std::to_string(o.min_coding_gain) +
                                ": expected a fraction in [0, 1)");
  }
  o.alpha = f.GetOr("alpha", "auto");
  ASSIGN_OR_RETURN(o.prune, f.GetDouble("prune", 0));
  ASSIGN_OR_RETURN(o.max_ppl_increase,
                   f.GetDouble("max-ppl-increase", packer::kDefaultMaxPplIncrease));
  o.scaling = !f.IsSet("no-scaling");
  o.rate_alloc = !f.IsSet("no-rate-alloc");
  o.hadamard = !f.IsSet("no-hadamard");
  const std::string rounding = f.GetOr("rounding", "gptq");
  if (rounding != "gptq" && rounding != "nearest") {
    return InvalidArgumentError("--rounding " + rounding + ": expected gptq or nearest");
  }
  o.gptq = rounding == "gptq";
  ASSIGN_OR_RETURN(o.level_shape, f.GetDouble("level-shape", packer::kDefaultLevelShape));
  if (!(o.level_shape >= 0 && o.level_shape <= 8)) {
    return InvalidArgumentError("--level-shape " + f.GetOr("level-shape", "") +
                                ": expected a number in [0, 8] (0: uniform levels)");
  }
  for (int b = kMinPackedBits; b <= kMaxLevelBits && o.level_shape > 0; ++b) {
    const std::string why = CodeLevelsProblem(b, LevelTable(b, o.level_shape));
    if (!why.empty()) {
      return InvalidArgumentError("--level-shape " + f.GetOr("level-shape", "") + ": at " +
                                  std::to_string(b) + " bits " + why +
                                  " (levels must be distinct: at most about 3.3)");
    }
  }
  for (const auto& a : args) o.command_line += (o.command_line.empty() ? "" : " ") + a;
  const bool quiet = f.IsSet("quiet");
  const bool tty = isatty(2) == 1;
  std::string last_stage;
  auto t0 = std::chrono::steady_clock::now();
  o.on_log = [&](const std::string& line) {
    if (quiet) return;
    if (tty) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "%s\n", line.c_str());
  };
  o.on_progress = [&](const std::string& stage, double frac) {
    if (quiet) return;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (tty) {  // a progress bar redrawn in place
      const int w = 30, fill = static_cast<int>(frac * w + 0.5);
      std::fprintf(stderr, "\r\033[K%-16s [%s%s] %3.0f%% %6.1fs", stage.c_str(),
                   std::string(static_cast<size_t>(fill), '#').c_str(),
                   std::string(static_cast<size_t>(w - fill), '.').c_str(), frac * 100, secs);
      if (frac >= 1.0) std::fputs("\n", stderr);
    } else if (stage != last_stage || frac >= 1.0) {  // plain lines: stage start and end
      std::fprintf(stderr, "[%7.1fs] %s %s\n", secs, stage.c_str(), frac >= 1.0 ? "done" : "...");
    }
    last_stage = stage;
  };
  ASSIGN_OR_RETURN(packer::PackReport r, packer::Pack(o));
  if (!quiet) {
    std::printf("%s", packer::FormatPackReport(r).c_str());
    std::printf("wrote %s in %.1f s\n", o.output.c_str(), r.seconds);
  }
  return Status::Ok();
}

Status CmdInspect(const std::vector<std::string>& args) {
  Flags f;
  f.Switch("verify", "check every CRC and decode every block").Switch("json", "one JSON object");
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(f, args, "inspect MODEL.dcm [options]: the container, its tensors and codecs"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("inspect: expected one .dcm path");
  ASSIGN_OR_RETURN(std::string out,
                   packer::Inspect(f.positional()[0], f.IsSet("verify"), f.IsSet("json")));
  std::fputs(out.c_str(), stdout);
  return Status::Ok();
}

Status CmdSynth(const std::vector<std::string>& args) {
  Flags f;
  f.Value("shape", "model shape").Value("entropy", "bits per weight of the INT8 codes (default 6)");
  f.Value("widths",
          "int8 (every matrix at --entropy) | stories3m (each matrix role at the width and "
          "entropy of the stories3M default pack; default)");
  f.Value("seed", "random seed (default 1)").Value("threads", "threads (default: all cores)");
  ASSIGN_OR_RETURN(const bool help, ParseCommand(f, args,
                                                 "synth --shape NAME [options] OUTPUT.gguf: a "
                                                 "model of a real shape with synthetic weights"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("synth: expected OUT.gguf");
  if (!f.Has("shape")) {
    std::string names;
    for (const auto& s : packer::SynthShapes()) names += (names.empty() ? "" : ", ") + s;
    return InvalidArgumentError("synth: --shape is required (" + names + ")");
  }
  packer::SynthOptions o;
  o.shape = *f.Get("shape");
  o.output = f.positional()[0];
  ASSIGN_OR_RETURN(o.entropy_bits, f.GetDouble("entropy", 6.0));
  o.widths = f.GetOr("widths", f.Has("entropy") ? "int8" : "stories3m");
  ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 1));
  o.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", std::thread::hardware_concurrency()));
  o.threads = static_cast<int>(std::clamp<int64_t>(threads, 1, 256));
  RETURN_IF_ERROR(packer::Synthesize(o));
  if (o.widths == "int8") {
    std::fprintf(stderr, "wrote %s: SYNTHETIC %s (INT8 codes ~%.2f bits/weight; benchmarks only)\n",
                 o.output.c_str(), o.shape.c_str(), o.entropy_bits);
  } else {
    std::fprintf(stderr,
                 "wrote %s: SYNTHETIC %s (code widths and entropies of the stories3M default "
                 "pack; benchmarks only)\n",
                 o.output.c_str(), o.shape.c_str());
  }
  return Status::Ok();
}

// The conversation so far and how to prompt the model with it.
struct ChatSession {
  ChatFamily family;
  std::vector<ChatMessage> messages;
  std::string bos, eos;  // token texts some templates write between turns
};

// Answers the conversation's last user message, streaming the answer to stdout unless `json`.
Result<GenerateResult> ChatTurn(LocalModel& l, ChatSession& chat, GenerateRequest req, bool json) {
  ASSIGN_OR_RETURN(req.prompt, RenderChat(chat.family, chat.messages, true, chat.bos, chat.eos));
  req.parse_special = true;
  ASSIGN_OR_RETURN(GenerateResult r, Generate(*l.model, *l.tokenizer, req, PrintText(json)));
  if (!json) std::fputs(r.tail.c_str(), stdout);
  chat.messages.push_back({"assistant", r.completion});
  return r;
}

Status CmdChat(const std::vector<std::string>& args) {
  Flags f;
  AddModelFlags(f);
  f.Value("message", "one user message: print the answer and exit (default: a conversation)")
      .Value("system", "system message")
      .Value("chat-template",
             "chatml | llama3 | llama2 | zephyr | gemma | phi3 (default: recognised from the "
             "model's tokenizer.chat_template)")
      .Value("n", "most tokens per answer (default 512)");
  AddSamplingFlags(f);
  std::vector<std::string> a;
  for (const auto& s : args) a.push_back(s == "-n" ? "--n" : s);
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(f, a, "chat MODEL [--message TEXT] [options]: chat with an instruct model"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("chat: expected one MODEL path");
  GenerateRequest req;
  RETURN_IF_ERROR(ParseSampling(f, 512, &req));
  ASSIGN_OR_RETURN(Loaded loaded, LoadModel(f, f.positional()[0], 1));
  LocalModel& l = loaded.model;
  const Tokenizer& tok = *l.tokenizer;
  ChatSession chat;
  if (f.Has("chat-template")) {
    ASSIGN_OR_RETURN(chat.family, ParseChatFamily(*f.Get("chat-template")));
  } else {
    ASSIGN_OR_RETURN(chat.family, DetectChatFamily(tok.chat_template()));
  }
  if (tok.bos_id() >= 0) chat.bos = tok.piece(tok.bos_id());
  if (tok.eos_id() >= 0) chat.eos = tok.piece(tok.eos_id());
  if (f.Has("system")) chat.messages.push_back({"system", *f.Get("system")});
  const bool json = f.IsSet("json");
  if (f.Has("message")) {
    chat.messages.push_back({"user", *f.Get("message")});
    ASSIGN_OR_RETURN(GenerateResult r, ChatTurn(l, chat, req, json));
    if (json) {
      JsonWriter w;
      w.BeginObject()
          .String("template", ChatFamilyName(chat.family))
          .String("completion", r.completion)
          .Int("prompt_tokens", static_cast<int64_t>(r.prompt_ids.size()))
          .Int("generated_tokens", static_cast<int64_t>(r.generated_ids.size()))
          .String("stop_reason", r.stop_reason)
          .EndObject();
      std::printf("%s\n", w.str().c_str());
    } else {
      std::printf("\n");
    }
    return Status::Ok();
  }
  // A conversation: one user message per line until end of input or "/exit"; on a terminal, with
  // a prompt. Each answer is generated over the whole conversation so far.
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty) {
    std::fprintf(stderr, "[chat with %s (%s template); /exit or Ctrl-D ends]\n",
                 l.file->config().name.c_str(), ChatFamilyName(chat.family).c_str());
  }
  for (std::string line;;) {
    if (tty) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    chat.messages.push_back({"user", line});
    auto r = ChatTurn(l, chat, req, json);
    if (!r.ok()) {
      // The conversation no longer fits the context (or the model failed): say so, start over.
      std::fprintf(stderr, "\n[%s; the conversation starts over]\n", r.status().ToString().c_str());
      chat.messages.erase(chat.messages.begin() + (f.Has("system") ? 1 : 0), chat.messages.end());
      continue;
    }
    if (json) {
      JsonWriter w;
      w.BeginObject()
          .String("completion", r->completion)
          .String("stop_reason", r->stop_reason)
          .EndObject();
      std::printf("%s\n", w.str().c_str());
    } else {
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  return Status::Ok();
}

Status CmdTokenize(const std::vector<std::string>& args) {
  Flags f;
  f.Value("tokenizer", "llama2.c tokenizer.bin (for .bin checkpoints)")
      .Value("text", "text to encode")
      .Switch("no-bos", "do not prepend BOS")
      .Switch("json", "print one JSON object");
  ASSIGN_OR_RETURN(
      const bool help,
      ParseCommand(f, args, "tokenize MODEL --text TEXT [options]: token ids of a text"));
  if (help) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgumentError("tokenize: expected one MODEL path");
  if (!f.Has("text")) return InvalidArgumentError("tokenize: --text TEXT is required");
  ASSIGN_OR_RETURN(TokenizerSpec spec,
                   LoadTokenizerSpec(f.positional()[0], f.GetOr("tokenizer", "")));
  ASSIGN_OR_RETURN(auto tok, Tokenizer::Create(std::move(spec)));
  std::vector<int32_t> ids = tok->Encode(*f.Get("text"), tok->add_bos() && !f.IsSet("no-bos"));
  if (f.IsSet("json")) {
    JsonWriter w;
    w.BeginObject().IntArray("ids", ids).EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    for (int32_t id : ids) {
      std::printf("%6d %s\n", id, JsonEscape(tok->TokenBytes(id)).c_str());
    }
  }
  return Status::Ok();
}

}  // namespace
}  // namespace dcomp

int main(int argc, char** argv) {
  using namespace dcomp;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::printf("dcomp %s\n", DCOMP_VERSION);
    return 0;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  Status s;
  if (cmd == "pack") {
    s = CmdPack(args);
  } else if (cmd == "inspect") {
    s = CmdInspect(args);
  } else if (cmd == "synth") {
    s = CmdSynth(args);
  } else if (cmd == "generate") {
    s = CmdGenerate(args);
  } else if (cmd == "eval") {
    s = CmdEval(args);
  } else if (cmd == "chat") {
    s = CmdChat(args);
  } else if (cmd == "tokenize") {
    s = CmdTokenize(args);
  } else {
    std::fprintf(stderr, "dcomp: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "dcomp %s: %s\n", cmd.c_str(), s.ToString().c_str());
    return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
