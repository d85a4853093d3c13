// The OpenAI-compatible HTTP API's JSON: request bodies of /v1/completions and
// /v1/chat/completions translated into the gRPC requests (so that both protocols share one
// validation, one queue and one engine path), and the responses, stream chunks and errors in
// OpenAI's shapes. No sockets here: the HTTP server is daemon/http_server.h.
//
// Parsing uses nlohmann::json; every error is INVALID_ARGUMENT whose message starts with the
// field it is about ("max_tokens: expected an integer, got string"), which ErrorBody reports as
// OpenAI's `param`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "proto/config.pb.h"
#include "proto/dcomp.pb.h"

namespace dcomp::server::openai {

// What a request asked for beyond the generation itself.
struct Options {
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt is part of the text
};

// A /v1/completions body. Sampling defaults follow OpenAI's: temperature 1, top_p 1, max_tokens
// 16; without `seed` the sampler gets a random one. `prompt` is a string or an array of one
// string; n must be 1; logprobs, suffix and penalties other than 0 are refused by name.
// llama.cpp's extensions top_k, min_p, repetition_penalty and ignore_eos are accepted.
Result<v1::GenerateRequest> ParseCompletionRequest(std::string_view body, Options* options);

// A /v1/chat/completions body: `messages` with roles system, developer (as system), user and
// assistant, each content a string or an array of text parts. max_tokens (or
// max_completion_tokens) defaults to limits.max_tokens. The extension `chat_template` names a
// family as in ChatRequest.
Result<v1::ChatRequest> ParseChatRequest(std::string_view body, const v1::RequestLimits& limits,
                                         Options* options);

// "stop" for the end of sequence and stop strings, "length" for max_tokens and the context.
std::string FinishReason(v1::StopReason r);

// The HTTP status of an error: 400 invalid argument / failed precondition, 401 unauthenticated,
// 404 not found, 413 too large (OUT_OF_RANGE), 429 resource exhausted, 503 unavailable, 504
// deadline, 499 cancelled, 500 otherwise.
int HttpStatus(StatusCode code);

// {"error": {"message", "type", "param", "code"}}, OpenAI's error object.
std::string ErrorBody(const Status& s);

// Everything that names the response: its id ("cmpl-7"), creation time and the model.
struct ResponseInfo {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// A non-streamed response: text_completion or chat.completion with choices[0] and usage.
std::string CompletionBody(const ResponseInfo& info, bool chat, const std::string& text,
                           const v1::GenerateResult& result);
// One server-sent event's JSON: a chunk carrying `text` (chat: delta.content; the first chat chunk
// also delta.role), with finish_reason when `finish` is not empty.
std::string ChunkBody(const ResponseInfo& info, bool chat, const std::string& text, bool first,
                      const std::string& finish);
// The usage chunk of stream_options.include_usage (choices empty).
std::string UsageChunkBody(const ResponseInfo& info, bool chat, const v1::GenerateResult& result);
// GET /v1/models and /v1/models/{id}.
std::string ModelBody(const std::string& model, int64_t created);
std::string ModelListBody(const std::string& model, int64_t created);

}  // namespace dcomp::server::openai
