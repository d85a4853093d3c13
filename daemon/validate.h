// Validation of Generate, Chat and Tokenize requests before they take a place in the queue. Every
// error is INVALID_ARGUMENT and names the field ("prompt", "max_tokens", "sampling.top_p") with
// what was expected and what was given. Unknown fields are accepted and logged at debug level.
#pragma once

#include "base/status.h"
#include "engine/chat_template.h"
#include "engine/generate.h"
#include "engine/tokenizer.h"
#include "proto/config.pb.h"
#include "proto/dcomp.pb.h"

namespace dcomp::server {

// The engine request for `req`, checked against `limits`, with the prompt encoded by `tok`
// (GenerateRequest::prompt_ids, so that Generate does not encode it again: pass Generate the same
// Tokenizer); `prompt_tokens` receives the prompt's token count, which must leave room for one
// token in `context_length`.
Result<GenerateRequest> ValidateGenerateRequest(const v1::GenerateRequest& req,
                                                const v1::RequestLimits& limits,
                                                const Tokenizer& tok, int32_t context_length,
                                                int32_t* prompt_tokens);

// Stop strings a request may give, and their longest length in bytes.
constexpr int kMaxStopStrings = 16;
constexpr uint32_t kMaxStopBytes = 256;

// The chat family of a Chat request: `requested` (the request's chat_template; INVALID_ARGUMENT
// when it names none), else `fallback` (the config's or the model's; FAILED_PRECONDITION saying
// how to name one when empty).
Result<ChatFamily> ResolveChatFamily(const std::string& requested, const std::string& fallback);

// As ValidateGenerateRequest for a conversation: roles and contents checked (content bytes
// together within limits.max_prompt_bytes), the prompt rendered with the family
// ResolveChatFamily(req.chat_template(), default_family) gives and encoded with its control
// tokens.
Result<GenerateRequest> ValidateChatRequest(const v1::ChatRequest& req,
                                            const v1::RequestLimits& limits, const Tokenizer& tok,
                                            int32_t context_length,
                                            const std::string& default_family,
                                            int32_t* prompt_tokens);
Status ValidateTokenizeRequest(const v1::TokenizeRequest& req, const v1::RequestLimits& limits);

// The unknown field numbers of `m` and of its sub-messages, named by path from `where`
// ("request.sampling: unknown field number 9 (not part of dcomp.v1.Sampling)"); empty if none.
std::string DescribeUnknownFields(const google::protobuf::Message& m, const std::string& where);
// Unknown fields are accepted, as proto3 intends (a newer client talking to an older daemon), and
// logged at debug level naming them and the RPC.
void LogUnknownFields(const google::protobuf::Message& m, const std::string& rpc);

}  // namespace dcomp::server
