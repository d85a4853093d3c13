// The HTTP API's JSON translation (daemon/openai.h): what each body becomes, OpenAI's defaults,
// and errors that name the field, on their own and through the gRPC validation behind them.
#include "daemon/openai.h"

#include <gtest/gtest.h>

#include "tests/util/mini_json.h"

namespace dcomp::server::openai {
namespace {

v1::RequestLimits Limits() {
  v1::RequestLimits l;
  l.set_max_prompt_bytes(4096);
  l.set_max_tokens(256);
  return l;
}

std::string Error(const Status& s) { return s.ok() ? "ok" : s.message(); }

TEST(OpenAiTest, CompletionDefaultsFollowOpenAi) {
  Options o;
  auto r = ParseCompletionRequest(R"({"model":"x","prompt":"Once"})", &o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->prompt(), "Once");
  EXPECT_EQ(r->max_tokens(), 16);
  EXPECT_EQ(r->sampling().temperature(), 1.0f);
  EXPECT_FALSE(r->sampling().has_top_p());
  EXPECT_FALSE(o.stream);
  // No seed: a fresh one per request.
  auto again = ParseCompletionRequest(R"({"prompt":"Once"})", &o);
  EXPECT_NE(r->sampling().seed(), again->sampling().seed());
}

TEST(OpenAiTest, CompletionFieldsAndExtensions) {
  Options o;
  auto r = ParseCompletionRequest(
      R"({"prompt":["Once"],"max_tokens":5,"temperature":0,"top_p":0.5,"seed":9,"stop":"\n",
          "stream":true,"stream_options":{"include_usage":true},"echo":true,"n":1,
          "top_k":40,"min_p":0.1,"repetition_penalty":1.1,"ignore_eos":true,
          "presence_penalty":0,"logprobs":null,"user":"u","unknown_field":[1,2]})",
      &o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->prompt(), "Once");
  EXPECT_EQ(r->max_tokens(), 5);
  EXPECT_EQ(r->sampling().temperature(), 0.0f);
  EXPECT_EQ(r->sampling().top_p(), 0.5f);
  EXPECT_EQ(r->sampling().seed(), 9u);
  EXPECT_EQ(r->sampling().top_k(), 40);
  EXPECT_TRUE(r->ignore_eos());
  ASSERT_EQ(r->stop_size(), 1);
  EXPECT_EQ(r->stop(0), "\n");
  EXPECT_TRUE(o.stream && o.include_usage && o.echo);
  auto many = ParseCompletionRequest(R"({"prompt":"x","stop":["a","b"]})", &o);
  EXPECT_EQ(many->stop_size(), 2);
}

TEST(OpenAiTest, ErrorsNameTheField) {
  Options o;
  const auto completion = [&](const char* body) {
    return Error(ParseCompletionRequest(body, &o).status());
  };
  const auto chat = [&](const char* body) {
    return Error(ParseChatRequest(body, Limits(), &o).status());
  };
  EXPECT_EQ(completion(""), "body: empty; expected a JSON object");
  EXPECT_EQ(completion("[1]"), "body: expected a JSON object, got array");
  EXPECT_NE(completion("{\"prompt\":").find("body: not valid JSON: parse error at line 1"),
            std::string::npos);
  // A number beyond double is the parser's out_of_range, not a crash (found by fuzz_request).
  EXPECT_NE(
      completion(R"({"prompt":"x","seed":1e99999})").find("body: not valid JSON: number overflow"),
      std::string::npos);
  EXPECT_EQ(completion("{}"), "prompt: required");
  EXPECT_EQ(completion(R"({"prompt":5})"), "prompt: expected a string, got number");
  EXPECT_EQ(completion(R"({"prompt":[1,2]})"),
            "prompt: token arrays are not supported; send the text");
  EXPECT_EQ(completion(R"({"prompt":["a","b"]})"),
            "prompt: expected one prompt; arrays of 2 are not supported");
  EXPECT_EQ(completion(R"({"prompt":"x","max_tokens":"9"})"),
            "max_tokens: expected an integer, got string");
  EXPECT_EQ(completion(R"({"prompt":"x","max_tokens":2.5})"),
            "max_tokens: expected an integer, got number");
  EXPECT_EQ(completion(R"({"prompt":"x","temperature":"hot"})"),
            "temperature: expected a number, got string");
  EXPECT_EQ(completion(R"({"prompt":"x","stream":1})"), "stream: expected a boolean, got number");
  EXPECT_EQ(completion(R"({"prompt":"x","n":2})"), "n: only 1 is supported, got 2");
  EXPECT_EQ(completion(R"({"prompt":"x","stop":[1]})"), "stop[0]: expected a string, got number");
  EXPECT_EQ(completion(R"({"prompt":"x","logprobs":3})"), "logprobs: not supported");
  EXPECT_EQ(completion(R"({"prompt":"x","frequency_penalty":0.5})"),
            "frequency_penalty: not supported (only 0)");
  EXPECT_EQ(completion(R"({"prompt":"x","model":7})"), "model: expected a string, got number");
  EXPECT_EQ(chat(R"({})"), "messages: required");
  EXPECT_EQ(chat(R"({"messages":{}})"), "messages: expected an array, got object");
  EXPECT_EQ(chat(R"({"messages":[{"content":"x"}]})"), "messages[0].role: required");
  EXPECT_EQ(chat(R"({"messages":[{"role":"tool","content":"x"}]})"),
            "messages[0].role: tool messages are not supported");
  EXPECT_EQ(chat(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"),
            "messages[0].content[0].type: only \"text\" parts are supported, got \"image_url\"");
  EXPECT_EQ(chat(R"({"messages":[],"tools":[{"type":"function"}]})"),
            "tools: tool calling is not supported");
  EXPECT_EQ(chat(R"({"messages":[],"response_format":{"type":"json_object"}})"),
            "response_format.type: only \"text\" is supported");
}

TEST(OpenAiTest, ChatMessagesAndDefaults) {
  Options o;
  auto r = ParseChatRequest(
      R"({"messages":[{"role":"developer","content":"Be brief."},
                      {"role":"user","content":[{"type":"text","text":"Hel"},
                                                {"type":"text","text":"lo"}]},
                      {"role":"assistant","content":"Hi"},
                      {"role":"user","content":"Again"}],
          "max_completion_tokens":7,"max_tokens":3,"chat_template":"chatml"})",
      Limits(), &o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->messages_size(), 4);
  EXPECT_EQ(r->messages(0).role(), "system");
  EXPECT_EQ(r->messages(1).content(), "Hello");
  EXPECT_EQ(r->max_tokens(), 7);  // max_completion_tokens wins
  EXPECT_EQ(r->chat_template(), "chatml");
  auto d = ParseChatRequest(R"({"messages":[{"role":"user","content":"x"}]})", Limits(), &o);
  EXPECT_EQ(d->max_tokens(), 256);  // limits.max_tokens
}

TEST(OpenAiTest, ErrorBodiesAndStatuses) {
  EXPECT_EQ(HttpStatus(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatus(StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatus(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatus(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatus(StatusCode::kOutOfRange), 413);
  EXPECT_EQ(HttpStatus(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatus(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatus(StatusCode::kDataLoss), 500);
  testing::Json e = testing::ParseJson(ErrorBody(InvalidArgumentError("messages[2].role: bad")));
  EXPECT_EQ(e["error"]["message"].str, "messages[2].role: bad");
  EXPECT_EQ(e["error"]["type"].str, "invalid_request_error");
  EXPECT_EQ(e["error"]["param"].str, "messages[2].role");
  e = testing::ParseJson(ErrorBody(ResourceExhaustedError("the queue is full")));
  EXPECT_EQ(e["error"]["type"].str, "rate_limit_error");
  EXPECT_EQ(e["error"]["code"].str, "rate_limit_exceeded");
  EXPECT_EQ(e["error"]["param"].kind, testing::Json::kNull);
  e = testing::ParseJson(ErrorBody(InvalidArgumentError("Not a field: x")));
  EXPECT_EQ(e["error"]["param"].kind, testing::Json::kNull);
}

TEST(OpenAiTest, ResponsesAndChunks) {
  v1::GenerateResult r;
  r.set_prompt_tokens(5);
  r.set_generated_tokens(3);
  r.set_stop_reason(v1::STOP_REASON_CONTEXT);
  const ResponseInfo info{"chatcmpl-4", 1700000000, "m.dcm"};
  testing::Json j = testing::ParseJson(CompletionBody(info, true, "Hi \xff", r));
  EXPECT_EQ(j["object"].str, "chat.completion");
  EXPECT_EQ(j["model"].str, "m.dcm");
  EXPECT_EQ(j["choices"][0]["message"]["content"].str, "Hi \xEF\xBF\xBD");  // replaced, not thrown
  EXPECT_EQ(j["choices"][0]["finish_reason"].str, "length");
  EXPECT_EQ(j["usage"]["total_tokens"].num, 8);
  j = testing::ParseJson(ChunkBody(info, true, "", true, ""));
  EXPECT_EQ(j["choices"][0]["delta"]["role"].str, "assistant");
  EXPECT_EQ(j["choices"][0]["finish_reason"].kind, testing::Json::kNull);
  j = testing::ParseJson(ChunkBody(info, false, "abc", false, "stop"));
  EXPECT_EQ(j["object"].str, "text_completion");
  EXPECT_EQ(j["choices"][0]["text"].str, "abc");
  EXPECT_EQ(j["choices"][0]["finish_reason"].str, "stop");
  j = testing::ParseJson(UsageChunkBody(info, true, r));
  EXPECT_TRUE(j["choices"].arr.empty());
  EXPECT_EQ(j["usage"]["completion_tokens"].num, 3);
  j = testing::ParseJson(ModelListBody("m.dcm", 5));
  EXPECT_EQ(j["data"][0]["id"].str, "m.dcm");
}

}  // namespace
}  // namespace dcomp::server::openai
