// Chat prompts for instruct models. A model file's Jinja template (GGUF tokenizer.chat_template)
// is recognised by the markers of its family, not by its exact text, and the prompt is rendered
// natively from the messages: the same string the family's template renders (the text of BOS
// excepted: the tokenizer adds BOS as for any prompt). Encode the result with parse_special so that
// the markers become their control tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace dcomp {

enum class ChatFamily {
  kChatML,  // <|im_start|>role ... <|im_end|>: Qwen2/2.5/3, SmolLM2, many fine-tunes
  kLlama3,  // <|start_header_id|>role<|end_header_id|> ... <|eot_id|>
  kLlama2,  // [INST] <<SYS>> ... <</SYS>> ... [/INST] answer </s>
  kZephyr,  // <|user|>\n ... </s>: TinyLlama-Chat, Zephyr
  kGemma,   // <start_of_turn>user ... <end_of_turn> (no system role: it opens the first user turn)
  kPhi3,    // <|user|>\n ... <|end|>
};

struct ChatMessage {
  std::string role;  // "system" (first message only), "user" or "assistant"
  std::string content;
};

// "chatml", "llama3", "llama2", "zephyr", "gemma", "phi3".
std::string ChatFamilyName(ChatFamily f);
// A family by name (a flag or config value forcing one); InvalidArgument listing the names.
Result<ChatFamily> ParseChatFamily(std::string_view name);
// The family of a Jinja chat template; InvalidArgument quoting its start when unrecognised (and
// saying how to force a family), NotFound when the template is empty.
Result<ChatFamily> DetectChatFamily(std::string_view jinja);

// The prompt for `messages` (roles checked: an optional system message first, then user and
// assistant turns, the last one a user turn when `add_generation_prompt`), ending with the
// assistant's header when `add_generation_prompt`. `bos` / `eos` are the tokenizer's BOS and EOS
// texts, which some families write between turns.
Result<std::string> RenderChat(ChatFamily family, const std::vector<ChatMessage>& messages,
                               bool add_generation_prompt, const std::string& bos,
                               const std::string& eos);

}  // namespace dcomp
