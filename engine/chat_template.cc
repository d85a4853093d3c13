#include "engine/chat_template.h"

#include <utility>

namespace dcomp {
namespace {

constexpr std::pair<ChatFamily, const char*> kNames[] = {
    {ChatFamily::kChatML, "chatml"}, {ChatFamily::kLlama3, "llama3"},
    {ChatFamily::kLlama2, "llama2"}, {ChatFamily::kZephyr, "zephyr"},
    {ChatFamily::kGemma, "gemma"},   {ChatFamily::kPhi3, "phi3"},
};

std::string KnownNames() {
  std::string s;
  for (const auto& [f, n] : kNames) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

bool Has(std::string_view s, std::string_view marker) {
  return s.find(marker) != std::string_view::npos;
}

std::string Trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

Status CheckRoles(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  if (messages.empty()) return InvalidArgumentError("chat: no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r == "system") {
      if (i != 0) {
        return InvalidArgumentError("chat: message " + std::to_string(i) +
                                    " is a system message; only the first message may be");
      }
    } else if (r != "user" && r != "assistant") {
      return InvalidArgumentError("chat: message " + std::to_string(i) + " has role '" + r +
                                  "' (expected system, user or assistant)");
    }
  }
  if (add_generation_prompt && messages.back().role != "user") {
    return InvalidArgumentError("chat: the last message must be the user's (got '" +
                                messages.back().role + "')");
  }
  return Status::Ok();
}

}  // namespace

std::string ChatFamilyName(ChatFamily f) {
  for (const auto& [family, n] : kNames) {
    if (family == f) return n;
  }
  return "?";
}

Result<ChatFamily> ParseChatFamily(std::string_view name) {
  for (const auto& [f, n] : kNames) {
    if (name == n) return f;
  }
  return InvalidArgumentError("unknown chat template family '" + std::string(name) +
                              "' (known: " + KnownNames() + ")");
}

Result<ChatFamily> DetectChatFamily(std::string_view t) {
  if (t.empty()) {
    return NotFoundError(
        "the model has no chat template (tokenizer.chat_template); choose a "
        "family with --chat-template (" +
        KnownNames() + ")");
  }
  // Order matters where families share markers: ChatML first (its fine-tunes may mention others),
  // Phi-3 (<|end|>) before Zephyr, which shares <|user|> / <|assistant|>.
  if (Has(t, "<|im_start|>")) return ChatFamily::kChatML;
  if (Has(t, "<|start_header_id|>") && Has(t, "<|end_header_id|>")) return ChatFamily::kLlama3;
  if (Has(t, "<start_of_turn>")) return ChatFamily::kGemma;
  if (Has(t, "<|assistant|>") && Has(t, "<|end|>")) return ChatFamily::kPhi3;
  if (Has(t, "<|user|>") && Has(t, "<|assistant|>")) return ChatFamily::kZephyr;
  if (Has(t, "[INST]") && Has(t, "[/INST]")) return ChatFamily::kLlama2;
  std::string head(t.substr(0, 80));
  for (char& c : head) {
    if (c == '\n') c = ' ';
  }
  return InvalidArgumentError("unrecognised chat template (it begins \"" + head +
                              (t.size() > 80 ? "...\"" : "\"") +
                              "); choose a family with --chat-template (" + KnownNames() + ")");
}

Result<std::string> RenderChat(ChatFamily family, const std::vector<ChatMessage>& messages,
                               bool add_generation_prompt, const std::string& bos,
                               const std::string& eos) {
  RETURN_IF_ERROR(CheckRoles(messages, add_generation_prompt));
  std::string out;
  switch (family) {
    case ChatFamily::kChatML:
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatFamily::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + Trim(m.content) +
               "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFamily::kLlama2: {
      // Every user turn opens with BOS but the first, whose BOS the tokenizer adds; the system
      // prompt opens the first user turn.
      std::string system;
      bool first = true;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system = "<<SYS>>\n" + Trim(m.content) + "\n<</SYS>>\n\n";
        } else if (m.role == "user") {
          out += (first ? "" : bos) + "[INST] " + system + Trim(m.content) + " [/INST]";
          system.clear();
          first = false;
        } else {
          // Appended piece by piece: GCC 12 (aarch64, -O3) warns falsely (-Wrestrict) about
          // `" " + std::string`.
          out += ' ';
          out += Trim(m.content);
          out += ' ';
          out += eos;
        }
      }
      break;  // the prompt ends with [/INST]: the answer follows
    }
    case ChatFamily::kZephyr:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + eos + "\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
    case ChatFamily::kGemma: {
      std::string system;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system = Trim(m.content) + "\n\n";
          continue;
        }
        const bool user = m.role == "user";
        out += std::string("<start_of_turn>") + (user ? "user" : "model") + "\n" +
               (user ? system : std::string()) + Trim(m.content) + "<end_of_turn>\n";
        if (user) system.clear();
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      break;
    }
    case ChatFamily::kPhi3:
      for (const ChatMessage& m : messages) {
        out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      }
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
  }
  return out;
}

}  // namespace dcomp
