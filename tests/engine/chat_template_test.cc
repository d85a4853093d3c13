// Chat templates: each family's exact prompt for one conversation (the strings the families'
// Jinja templates render, BOS left to the tokenizer), recognition of real templates by their
// markers, role errors, and generation stopping at the end-of-turn token.
#include "engine/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "engine/generate.h"
#include "engine/local_model.h"
#include "engine/model_file.h"
#include "tests/util/tiny_model.h"

namespace dcomp {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "You are helpful."},
    {"user", "Hi"},
    {"assistant", "Hello!"},
    {"user", "How are you?"},
};

std::string Render(ChatFamily f, const std::vector<ChatMessage>& m = kConversation) {
  auto r = RenderChat(f, m, true, "<s>", "</s>");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : "";
}

TEST(ChatTemplateTest, EachFamilyRendersItsExactPrompt) {
  EXPECT_EQ(Render(ChatFamily::kChatML),
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(Render(ChatFamily::kLlama3),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Llama 2: the first BOS is the tokenizer's, later turns write it.
  EXPECT_EQ(Render(ChatFamily::kLlama2),
            "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello! </s>"
            "<s>[INST] How are you? [/INST]");
  EXPECT_EQ(Render(ChatFamily::kZephyr),
            "<|system|>\nYou are helpful.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
            "<|user|>\nHow are you?</s>\n<|assistant|>\n");
  // Gemma has no system role: the system text opens the first user turn.
  EXPECT_EQ(Render(ChatFamily::kGemma),
            "<start_of_turn>user\nYou are helpful.\n\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(Render(ChatFamily::kPhi3),
            "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!"
            "<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n");
  // Without a system message.
  EXPECT_EQ(Render(ChatFamily::kGemma, {{"user", " Hi "}}),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(Render(ChatFamily::kLlama2, {{"user", "Hi"}}), "[INST] Hi [/INST]");
}

// Excerpts of the families' real templates (the markers, not the whole text, decide).
TEST(ChatTemplateTest, RealTemplatesAreRecognisedByTheirMarkers) {
  const std::pair<const char*, ChatFamily> cases[] = {
      {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
       "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
       "{{ '<|im_start|>assistant\n' }}{% endif %}",
       ChatFamily::kChatML},
      {"{{- bos_token }}{%- if custom_tools is defined %}... {{- '<|start_header_id|>' + "
       "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}",
       ChatFamily::kLlama3},
      {"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
       "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{{ ' <<SYS>>\\n' }}",
       ChatFamily::kLlama2},
      {"{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
       "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
       "{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endfor %}",
       ChatFamily::kZephyr},
      {"{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}...{{ '<start_of_turn>' + role + "
       "'\n' + (first_user_prefix if loop.first else \"\") }}",
       ChatFamily::kGemma},
      {"{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
       "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
       "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
       "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
       ChatFamily::kPhi3},
  };
  for (const auto& [tmpl, family] : cases) {
    auto f = DetectChatFamily(tmpl);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_EQ(ChatFamilyName(*f), ChatFamilyName(family)) << tmpl;
  }
}

TEST(ChatTemplateTest, BadTemplatesFamiliesAndRolesAreNamed) {
  auto f = DetectChatFamily("{{ 'Question: ' + message['content'] }}");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("unrecognised chat template"), std::string::npos);
  EXPECT_NE(f.status().message().find("Question: "), std::string::npos);
  EXPECT_NE(f.status().message().find("--chat-template"), std::string::npos);
  EXPECT_EQ(DetectChatFamily("").status().code(), StatusCode::kNotFound);
  auto p = ParseChatFamily("vicuna");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("'vicuna'"), std::string::npos);
  EXPECT_EQ(ChatFamilyName(*ParseChatFamily("gemma")), "gemma");
  auto r = RenderChat(ChatFamily::kChatML, {{"user", "a"}, {"system", "b"}, {"user", "c"}}, true,
                      "", "");
  EXPECT_NE(r.status().message().find("only the first message"), std::string::npos);
  r = RenderChat(ChatFamily::kChatML, {{"tool", "a"}}, true, "", "");
  EXPECT_NE(r.status().message().find("role 'tool'"), std::string::npos);
  r = RenderChat(ChatFamily::kChatML, {{"user", "a"}, {"assistant", "b"}}, true, "", "");
  EXPECT_NE(r.status().message().find("last message must be the user's"), std::string::npos);
  EXPECT_FALSE(RenderChat(ChatFamily::kChatML, {}, true, "", "").ok());
}

// The rendered prompt's markers become single control tokens, and generation ends at the
// end-of-turn token: the model's first greedy token is renamed <|eot_id|> in a second tokenizer.
TEST(ChatTemplateTest, MarkersAreControlTokensAndGenerationStopsAtEndOfTurn) {
  testing::TinyModelOptions o;
  o.chat_template = "{{ '<|im_start|>' + message['role'] }}";
  o.ctx = 64;
  const std::string path = ::testing::TempDir() + "/" + std::to_string(getpid()) + "_chat.gguf";
  ASSERT_TRUE(testing::WriteTinyModel(path, o).ok());
  auto m = OpenLocalModel(path, {});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Tokenizer& tok = *m->tokenizer;
  EXPECT_EQ(ChatFamilyName(*DetectChatFamily(tok.chat_template())), "chatml");
  auto prompt = RenderChat(ChatFamily::kChatML, {{"user", "t7"}}, true, "", "");
  ASSERT_TRUE(prompt.ok());
  const std::vector<int32_t> ids = tok.Encode(*prompt, tok.add_bos(), /*parse_special=*/true);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[0], 1);  // BOS
  EXPECT_EQ(ids[1], 3);  // <|im_start|>
  EXPECT_TRUE(tok.is_end_of_generation(4));
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_FALSE(tok.is_end_of_generation(5));

  GenerateRequest req;
  req.prompt = *prompt;
  req.parse_special = true;
  req.max_tokens = 4;
  req.stop_at_eos = false;
  auto free_run = Generate(*m->model, tok, req);
  ASSERT_TRUE(free_run.ok()) << free_run.status().ToString();
  const int32_t first = free_run->generated_ids[0];
  if (first < 5) GTEST_SKIP() << "the model's first token is special already (" << first << ")";
  TokenizerSpec spec = *LoadTokenizerSpec(path);
  spec.tokens[static_cast<size_t>(first)] = "<|eot_id|>";  // another family's end of turn
  auto renamed = Tokenizer::Create(spec);
  ASSERT_TRUE(renamed.ok());
  req.stop_at_eos = true;
  auto stopped = Generate(*m->model, **renamed, req);
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ(stopped->prompt_ids, free_run->prompt_ids);
  EXPECT_TRUE(stopped->generated_ids.empty());
  EXPECT_EQ(stopped->stop_reason, "eos");
}

}  // namespace
}  // namespace dcomp
