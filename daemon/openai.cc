#include "daemon/openai.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

namespace dcomp::server::openai {
namespace {

using json = nlohmann::ordered_json;  // members in the order written

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Status Expected(const std::string& field, const char* what, const json& got) {
  return InvalidArgumentError(field + ": expected " + what + ", got " + got.type_name());
}

Status Unsupported(const std::string& field, const std::string& why) {
  return InvalidArgumentError(field + ": " + why);
}

// A member of `o`; absent and null are the same (nullptr).
const json* Member(const json& o, const char* key) {
  const auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

Result<std::optional<bool>> Bool(const json& o, const char* key) {
  const json* v = Member(o, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return Expected(key, "a boolean", *v);
  return std::optional<bool>(v->get<bool>());
}

Result<std::optional<double>> Number(const json& o, const char* key) {
  const json* v = Member(o, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return Expected(key, "a number", *v);
  return std::optional<double>(v->get<double>());
}

// An integer; a number with a fraction is an error, values beyond int64 saturate.
Result<std::optional<int64_t>> Integer(const json& o, const char* key) {
  const json* v = Member(o, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    return std::optional<int64_t>(u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                                      ? std::numeric_limits<int64_t>::max()
                                      : static_cast<int64_t>(u));
  }
  if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e18) {
      return std::optional<int64_t>(static_cast<int64_t>(d));
    }
  }
  return Expected(key, "an integer", *v);
}

Result<std::optional<std::string>> String(const json& o, const char* key) {
  const json* v = Member(o, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return Expected(key, "a string", *v);
  return std::optional<std::string>(v->get<std::string>());
}

int32_t ClampInt32(int64_t v) {
  return static_cast<int32_t>(std::clamp<int64_t>(v, std::numeric_limits<int32_t>::min(),
                                                  std::numeric_limits<int32_t>::max()));
}

Result<json> ParseObject(std::string_view body) {
  if (body.empty()) return InvalidArgumentError("body: empty; expected a JSON object");
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ...", or
    // out_of_range 406 for a number beyond double.
    std::string what = e.what();
    if (const size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    return InvalidArgumentError("body: not valid JSON: " + what);
  }
  if (!j.is_object()) return Expected("body", "a JSON object", j);
  return j;
}

// The options both endpoints share, into `req` (GenerateRequest or ChatRequest).
template <typename Req>
Status ParseCommon(const json& o, int64_t default_max_tokens, Req* req, Options* options) {
  if (const json* m = Member(o, "model"); m != nullptr && !m->is_string()) {
    return Expected("model", "a string", *m);
  }
  ASSIGN_OR_RETURN(const std::optional<int64_t> n, Integer(o, "n"));
  if (n && *n != 1) return Unsupported("n", "only 1 is supported, got " + std::to_string(*n));
  ASSIGN_OR_RETURN(const std::optional<bool> stream, Bool(o, "stream"));
  options->stream = stream.value_or(false);
  if (const json* so = Member(o, "stream_options")) {
    if (!so->is_object()) return Expected("stream_options", "an object", *so);
    ASSIGN_OR_RETURN(const std::optional<bool> usage, Bool(*so, "include_usage"));
    options->include_usage = usage.value_or(false);
  }
  ASSIGN_OR_RETURN(const std::optional<int64_t> max_tokens, Integer(o, "max_tokens"));
  req->set_max_tokens(ClampInt32(max_tokens.value_or(default_max_tokens)));
  v1::Sampling* s = req->mutable_sampling();
  ASSIGN_OR_RETURN(const std::optional<double> temperature, Number(o, "temperature"));
  s->set_temperature(static_cast<float>(temperature.value_or(1.0)));
  ASSIGN_OR_RETURN(const std::optional<double> top_p, Number(o, "top_p"));
  if (top_p) s->set_top_p(static_cast<float>(*top_p));
  ASSIGN_OR_RETURN(const std::optional<int64_t> top_k, Integer(o, "top_k"));
  if (top_k) s->set_top_k(ClampInt32(*top_k));
  ASSIGN_OR_RETURN(const std::optional<double> min_p, Number(o, "min_p"));
  if (min_p) s->set_min_p(static_cast<float>(*min_p));
  ASSIGN_OR_RETURN(const std::optional<double> rep, Number(o, "repetition_penalty"));
  if (rep) s->set_repetition_penalty(static_cast<float>(*rep));
  ASSIGN_OR_RETURN(const std::optional<int64_t> seed, Integer(o, "seed"));
  if (seed) {
    s->set_seed(static_cast<uint64_t>(*seed));
  } else {
    // Without a seed OpenAI's sampling differs from call to call: a fresh seed each request.
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    s->set_seed(rng());
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    ASSIGN_OR_RETURN(const std::optional<double> p, Number(o, penalty));
    if (p && *p != 0.0) return Unsupported(penalty, "not supported (only 0)");
  }
  if (const json* lb = Member(o, "logit_bias"); lb != nullptr) {
    if (!lb->is_object()) return Expected("logit_bias", "an object", *lb);
    if (!lb->empty()) return Unsupported("logit_bias", "not supported");
  }
  if (const json* lp = Member(o, "logprobs");
      lp != nullptr && !(lp->is_boolean() && !lp->get<bool>()) &&
      !(lp->is_number_integer() && lp->get<int64_t>() == 0)) {
    return Unsupported("logprobs", "not supported");
  }
  if (const json* stop = Member(o, "stop")) {
    if (stop->is_string()) {
      req->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        const json& e = (*stop)[i];
        if (!e.is_string()) return Expected("stop[" + std::to_string(i) + "]", "a string", e);
        req->add_stop(e.get<std::string>());
      }
    } else {
      return Expected("stop", "a string or an array of strings", *stop);
    }
  }
  ASSIGN_OR_RETURN(const std::optional<bool> ignore_eos, Bool(o, "ignore_eos"));
  req->set_ignore_eos(ignore_eos.value_or(false));
  return Status::Ok();
}

// A chat message's content: a string, or an array of {"type": "text", "text": ...} parts.
Result<std::string> Content(const json& m, const std::string& field) {
  const json* c = Member(m, "content");
  if (c == nullptr) return std::string();
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) return Expected(field, "a string or an array of text parts", *c);
  std::string out;
  for (size_t j = 0; j < c->size(); ++j) {
    const std::string part = field + "[" + std::to_string(j) + "]";
    const json& p = (*c)[j];
    if (!p.is_object()) return Expected(part, "an object", p);
    ASSIGN_OR_RETURN(const std::optional<std::string> type, String(p, "type"));
    const std::string t = type.value_or("");
    if (t != "text") {
      return Unsupported(part + ".type", "only \"text\" parts are supported, got \"" + t + "\"");
    }
    ASSIGN_OR_RETURN(const std::optional<std::string> text, String(p, "text"));
    out += text.value_or("");
  }
  return out;
}

json Usage(const v1::GenerateResult& r) {
  return {{"prompt_tokens", r.prompt_tokens()},
          {"completion_tokens", r.generated_tokens()},
          {"total_tokens", r.prompt_tokens() + r.generated_tokens()}};
}

json Model(const std::string& model, int64_t created) {
  return {{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "dcomp"}};
}

json Header(const ResponseInfo& info, const char* object) {
  return {{"id", info.id}, {"object", object}, {"created", info.created}, {"model", info.model}};
}

}  // namespace

Result<v1::GenerateRequest> ParseCompletionRequest(std::string_view body, Options* options) {
  ASSIGN_OR_RETURN(const json o, ParseObject(body));
  v1::GenerateRequest req;
  const json* p = Member(o, "prompt");
  if (p == nullptr) return InvalidArgumentError("prompt: required");
  if (p->is_string()) {
    req.set_prompt(p->get<std::string>());
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    req.set_prompt((*p)[0].get<std::string>());
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    return Unsupported("prompt", "token arrays are not supported; send the text");
  } else if (p->is_array() && p->size() == 1) {
    return Expected("prompt[0]", "a string", (*p)[0]);
  } else if (p->is_array()) {
    return Unsupported("prompt", "expected one prompt; arrays of " + std::to_string(p->size()) +
                                     " are not supported");
  } else {
    return Expected("prompt", "a string", *p);
  }
  ASSIGN_OR_RETURN(const std::optional<std::string> suffix, String(o, "suffix"));
  if (suffix && !suffix->empty()) return Unsupported("suffix", "not supported");
  ASSIGN_OR_RETURN(const std::optional<int64_t> best_of, Integer(o, "best_of"));
  if (best_of && *best_of != 1) return Unsupported("best_of", "only 1 is supported");
  ASSIGN_OR_RETURN(const std::optional<bool> echo, Bool(o, "echo"));
  options->echo = echo.value_or(false);
  RETURN_IF_ERROR(ParseCommon(o, 16, &req, options));
  return req;
}

Result<v1::ChatRequest> ParseChatRequest(std::string_view body, const v1::RequestLimits& limits,
                                         Options* options) {
  ASSIGN_OR_RETURN(const json o, ParseObject(body));
  v1::ChatRequest req;
  const json* messages = Member(o, "messages");
  if (messages == nullptr) return InvalidArgumentError("messages: required");
  if (!messages->is_array()) return Expected("messages", "an array", *messages);
  for (size_t i = 0; i < messages->size(); ++i) {
    const std::string field = "messages[" + std::to_string(i) + "]";
    const json& m = (*messages)[i];
    if (!m.is_object()) return Expected(field, "an object", m);
    const json* role = Member(m, "role");
    if (role == nullptr) return InvalidArgumentError(field + ".role: required");
    if (!role->is_string()) return Expected(field + ".role", "a string", *role);
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r == "tool" || r == "function") {
      return Unsupported(field + ".role", "tool messages are not supported");
    }
    if (Member(m, "tool_calls") != nullptr || Member(m, "function_call") != nullptr) {
      return Unsupported(field, "tool calls are not supported");
    }
    ASSIGN_OR_RETURN(std::string content, Content(m, field + ".content"));
    v1::ChatMessage* out = req.add_messages();
    out->set_role(r);
    out->set_content(std::move(content));
  }
  for (const char* key : {"tools", "functions"}) {
    if (const json* t = Member(o, key); t != nullptr && !(t->is_array() && t->empty())) {
      return Unsupported(key, "tool calling is not supported");
    }
  }
  if (const json* rf = Member(o, "response_format")) {
    if (!rf->is_object()) return Expected("response_format", "an object", *rf);
    ASSIGN_OR_RETURN(const std::optional<std::string> type, String(*rf, "type"));
    if (type && *type != "text") {
      return Unsupported("response_format.type", "only \"text\" is supported");
    }
  }
  ASSIGN_OR_RETURN(const std::optional<std::string> family, String(o, "chat_template"));
  req.set_chat_template(family.value_or(""));
  RETURN_IF_ERROR(ParseCommon(o, limits.max_tokens(), &req, options));
  // The newer name of max_tokens for chat wins when both are given.
  ASSIGN_OR_RETURN(const std::optional<int64_t> mct, Integer(o, "max_completion_tokens"));
  if (mct) req.set_max_tokens(ClampInt32(*mct));
  if (options->echo) return Unsupported("echo", "not supported for chat");
  return req;
}

std::string FinishReason(v1::StopReason r) {
  switch (r) {
    case v1::STOP_REASON_LENGTH:
    case v1::STOP_REASON_CONTEXT: return "length";
    default: return "stop";
  }
}

int HttpStatus(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition: return 400;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kOutOfRange: return 413;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kCancelled: return 499;
    case StatusCode::kUnimplemented: return 501;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ErrorBody(const Status& s) {
  const int http = HttpStatus(s.code());
  const char* type = http == 401   ? "authentication_error"
                     : http == 403 ? "permission_error"
                     : http == 404 ? "not_found_error"
                     : http == 429 ? "rate_limit_error"
                     : http == 503 ? "unavailable_error"
                     : http < 500  ? "invalid_request_error"
                                   : "server_error";
  // The field an invalid-argument message starts with ("max_tokens: ...") is the `param`.
  json param = nullptr;
  if (http == 400 || http == 413) {
    const std::string& m = s.message();
    const size_t colon = m.find(": ");
    if (colon != std::string::npos && colon > 0 &&
        m.find_first_not_of("abcdefghijklmnopqrstuvwxyz_.[]0123456789") >= colon) {
      param = m.substr(0, colon);
    }
  }
  json code = nullptr;
  if (http == 401) code = "invalid_api_key";
  if (http == 429) code = "rate_limit_exceeded";
  return Dump(
      {{"error", {{"message", s.message()}, {"type", type}, {"param", param}, {"code", code}}}});
}

std::string CompletionBody(const ResponseInfo& info, bool chat, const std::string& text,
                           const v1::GenerateResult& result) {
  json j = Header(info, chat ? "chat.completion" : "text_completion");
  json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReason(result.stop_reason())}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  j["usage"] = Usage(result);
  return Dump(j);
}

std::string ChunkBody(const ResponseInfo& info, bool chat, const std::string& text, bool first,
                      const std::string& finish) {
  json j = Header(info, chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish.empty() ? json(nullptr) : json(finish);
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish.empty())) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  return Dump(j);
}

std::string UsageChunkBody(const ResponseInfo& info, bool chat, const v1::GenerateResult& result) {
  json j = Header(info, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = Usage(result);
  return Dump(j);
}

std::string ModelBody(const std::string& model, int64_t created) {
  return Dump(Model(model, created));
}

std::string ModelListBody(const std::string& model, int64_t created) {
  return Dump({{"object", "list"}, {"data", json::array({Model(model, created)})}});
}

}  // namespace dcomp::server::openai
