// The scheduler (continuous batching) on the embedded model: every request's tokens are the ones
// it gets alone, whatever runs beside it, at any batch size and thread count; admission by queue
// depth and KV room, FIFO; cancellation while queued or running. Also run under ThreadSanitizer.
#include "daemon/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "engine/local_model.h"
#include "tests/util/test_paths.h"

namespace dcomp::server {
namespace {

using std::chrono::milliseconds;

LocalModel Open(int threads) {
  LocalModelOptions o;
  o.threads = threads;
  Result<LocalModel> m = OpenLocalModel(testing::SourceDir() + "/models/stories260K.bin", o);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(*m);
}

// Requests of different lengths, greedy and sampled.
std::vector<GenerateRequest> MixedRequests() {
  const char* prompts[] = {"Once upon a time",
                           "Lily",
                           "The dog ran to the park and saw a big red ball. He",
                           "One day",
                           "Tom and Sue went to the sea",
                           "A",
                           "She was happy because",
                           "The sun"};
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    GenerateRequest r;
    r.prompt = prompts[i];
    r.max_tokens = 6 + 9 * (i % 4);
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 40 + static_cast<uint64_t>(i);
    }
    reqs.push_back(r);
  }
  return reqs;
}

std::vector<int32_t> RunToEnd(Job& j, std::string* streamed = nullptr) {
  std::vector<Job::Token> toks;
  while (!j.Wait(milliseconds(50), &toks)) {
  }
  std::vector<int32_t> ids;
  for (const Job::Token& t : toks) {
    ids.push_back(t.id);
    if (streamed) *streamed += t.text;
  }
  return ids;
}

TEST(SchedulerTest, EveryRequestGetsItsTokensAloneInAnyBatch) {
  for (int threads : {1, 2}) {
    LocalModel m = Open(threads);
    std::vector<GenerateRequest> reqs = MixedRequests();
    std::vector<GenerateResult> alone;
    for (const GenerateRequest& r : reqs) alone.push_back(*Generate(*m.model, *m.tokenizer, r));
    for (int max_batch : {1, 3, 8}) {
      Mutex engine;
      Scheduler::Options o;
      o.max_batch = max_batch;
      o.queue_depth = 16;
      Scheduler s(m.model.get(), m.tokenizer.get(), &engine, o);
      std::vector<std::shared_ptr<Job>> jobs;
      for (const GenerateRequest& r : reqs) {
        auto j = s.Submit(r);
        ASSERT_TRUE(j.ok()) << j.status().ToString();
        jobs.push_back(*j);
      }
      for (size_t i = 0; i < jobs.size(); ++i) {
        std::string text;
        const std::vector<int32_t> streamed = RunToEnd(*jobs[i], &text);
        const std::string where = "threads " + std::to_string(threads) + " max_batch " +
                                  std::to_string(max_batch) + " request " + std::to_string(i);
        ASSERT_TRUE(jobs[i]->status().ok()) << where << ": " << jobs[i]->status().ToString();
        EXPECT_EQ(jobs[i]->result().generated_ids, alone[i].generated_ids) << where;
        EXPECT_EQ(streamed, alone[i].generated_ids) << where;
        EXPECT_EQ(jobs[i]->result().completion, alone[i].completion) << where;
        EXPECT_EQ(jobs[i]->result().stop_reason, alone[i].stop_reason) << where;
      }
      const Scheduler::Stats st = s.stats();
      EXPECT_EQ(st.running + st.waiting, 0);
      EXPECT_EQ(st.kv_used_bytes, 0u);
      // Requests did run together: fewer steps than one request at a time would need.
      if (max_batch > 1) {
        EXPECT_GT(st.step_requests, st.steps) << "max_batch " << max_batch;
      }
    }
  }
}

TEST(SchedulerTest, AdmitsByQueueDepthAndKvRoomInArrivalOrder) {
  LocalModel m = Open(1);
  const ModelConfig& c = m.model->config();
  GenerateRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 40;
  r.stop_at_eos = false;  // every request runs its 40 tokens
  const size_t prompt = m.tokenizer->Encode(r.prompt, m.tokenizer->add_bos()).size();
  const uint64_t one = KvCache::Bytes(c, static_cast<int32_t>(prompt) + r.max_tokens - 1);
  Mutex engine;
  Scheduler::Options o;
  o.max_batch = 8;
  o.queue_depth = 4;
  o.kv_cache_bytes = 2 * one + one / 2;  // two fit at once
  o.kv_note = "kv_cache_tokens test";
  Scheduler s(m.model.get(), m.tokenizer.get(), &engine, o);
  // A request that could never fit is refused at once, naming what it needs and the room.
  GenerateRequest big = r;
  big.max_tokens = 200;
  auto refused = s.Submit(big);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  const std::string msg = refused.status().message();
  EXPECT_NE(
      msg.find(std::to_string(KvCache::Bytes(c, static_cast<int32_t>(prompt) + 199)) + " bytes"),
      std::string::npos)
      << msg;
  EXPECT_NE(msg.find(std::to_string(o.kv_cache_bytes) + " bytes"), std::string::npos) << msg;
  // Four requests at once (the engine held meanwhile, so none finishes before the fifth is
  // refused); two fit the KV room at a time.
  std::vector<std::shared_ptr<Job>> jobs;
  {
    MutexLock hold(&engine);
    for (int i = 0; i < 4; ++i) jobs.push_back(*s.Submit(r));
    auto full = s.Submit(r);
    EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(full.status().message().find("queue is full (4"), std::string::npos);
  }
  // Never more than two running, never more KV than the room; all four end.
  int most_running = 0;
  uint64_t most_kv = 0;
  for (bool all_done = false; !all_done;) {
    const Scheduler::Stats st = s.stats();
    most_running = std::max(most_running, st.running);
    most_kv = std::max(most_kv, st.kv_used_bytes);
    all_done = st.running + st.waiting == 0;
    std::this_thread::yield();
  }
  EXPECT_LE(most_running, 2);
  EXPECT_LE(most_kv, 2 * one);
  for (auto& j : jobs) RunToEnd(*j);
  for (auto& j : jobs) EXPECT_TRUE(j->status().ok()) << j->status().ToString();
  // Two ran together (some steps carried two requests), and first come, first served: the last
  // two waited for room that only the first two could free.
  const Scheduler::Stats st = s.stats();
  EXPECT_GT(st.step_requests, st.steps);
  EXPECT_LT(jobs[0]->queue_seconds(), jobs[2]->queue_seconds());
  EXPECT_LT(jobs[1]->queue_seconds(), jobs[2]->queue_seconds());
  EXPECT_LT(jobs[1]->queue_seconds(), jobs[3]->queue_seconds());
  EXPECT_EQ(s.stats().kv_used_bytes, 0u);
}

TEST(SchedulerTest, CancelledRequestsLeaveTheQueueAndTheBatch) {
  LocalModel m = Open(2);
  Mutex engine;
  Scheduler::Options o;
  o.max_batch = 1;
  Scheduler s(m.model.get(), m.tokenizer.get(), &engine, o);
  GenerateRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 400;
  r.stop_at_eos = false;
  auto running = *s.Submit(r);
  auto queued = *s.Submit(r);
  std::vector<Job::Token> toks;
  while (toks.empty()) running->Wait(milliseconds(50), &toks);  // it runs
  queued->Cancel();
  RunToEnd(*queued);
  EXPECT_EQ(queued->status().code(), StatusCode::kCancelled);
  EXPECT_TRUE(queued->result().generated_ids.empty());
  running->Cancel();
  RunToEnd(*running);
  EXPECT_EQ(running->status().code(), StatusCode::kCancelled);
  EXPECT_LT(running->result().generated_ids.size(), 400u);
  const Scheduler::Stats st = s.stats();
  EXPECT_EQ(st.running + st.waiting, 0);
  EXPECT_EQ(st.kv_used_bytes, 0u);
  // The scheduler goes on serving.
  r.max_tokens = 3;
  auto after = *s.Submit(r);
  RunToEnd(*after);
  EXPECT_TRUE(after->status().ok());
  EXPECT_EQ(after->result().generated_ids.size(), 3u);
}

// on_idle runs every idle tick while nothing runs (the daemon applies there a re-plan that memory
// pressure asked for while it was idle), again when the last request ends, and never while one
// runs.
TEST(SchedulerTest, OnIdleRunsEveryTickWhileNothingRuns) {
  LocalModel m = Open(1);
  Mutex engine;
  std::atomic<Scheduler*> sched{nullptr};
  std::atomic<int> calls{0}, busy_calls{0};
  Scheduler::Options o;
  o.idle_tick = milliseconds(20);
  o.on_idle = [&] {
    if (Scheduler* sp = sched.load(); sp != nullptr && sp->stats().running > 0) ++busy_calls;
    ++calls;
  };
  Scheduler s(m.model.get(), m.tokenizer.get(), &engine, o);
  sched = &s;
  const auto wait_for_calls = [&](int n) {
    for (int i = 0; i < 500 && calls.load() < n; ++i) std::this_thread::sleep_for(milliseconds(10));
    return calls.load();
  };
  EXPECT_GE(wait_for_calls(3), 3);  // idle, no request yet
  GenerateRequest r;
  r.prompt = "Once upon a time";
  r.max_tokens = 40;
  r.stop_at_eos = false;
  auto j = *s.Submit(r);
  RunToEnd(*j);
  EXPECT_TRUE(j->status().ok());
  const int after = calls.load();
  EXPECT_GE(wait_for_calls(after + 3), after + 3);  // idle again
  EXPECT_EQ(busy_calls.load(), 0);
}

TEST(SchedulerTest, InvalidRequestsAreRefusedAtSubmit) {
  LocalModel m = Open(1);
  Mutex engine;
  Scheduler s(m.model.get(), m.tokenizer.get(), &engine, {});
  GenerateRequest r;
  EXPECT_EQ(s.Submit(r).status().code(), StatusCode::kInvalidArgument);  // empty prompt
  r.prompt = "x";
  r.max_tokens = 0;
  EXPECT_EQ(s.Submit(r).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dcomp::server
