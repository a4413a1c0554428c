// Chat rendering against golden output of the real Jinja templates
// (tests/data/tokenizer/chat_templates.json, written by tools/gen_chat_template_fixtures.py).
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "tokenizer_test_util.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {
namespace {

using nlohmann::json;
using testing::test_data;

const json& fixtures() {
  static const json j = json::parse(read_file(test_data("tokenizer/chat_templates.json")));
  return j;
}

std::vector<ChatMessage> messages_of(const json& list) {
  std::vector<ChatMessage> out;
  for (const json& m : list) {
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(),
                   m.value("reasoning_content", std::string())});
  }
  return out;
}

TEST(ChatTemplate, MatchesJinjaFixtures) {
  const json& f = fixtures();
  size_t rendered = 0, refused = 0;
  for (const json& c : f["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const json& tmpl = f["templates"][name];
    ChatTemplate t = ChatTemplate::from_source(tmpl["source"].get<std::string>());
    ASSERT_EQ(t.name(), tmpl["format"].get<std::string>()) << name;
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    options.enable_thinking = c["enable_thinking"].get<bool>();
    auto messages = messages_of(c["messages"]);
    const std::string label = name + " / " + c["conversation"].get<std::string>() +
                              " / gen=" + std::to_string(options.add_generation_prompt) +
                              " think=" + std::to_string(options.enable_thinking);
    if (c.contains("error")) {
      EXPECT_THROW(t.render(messages, options), Error) << label;
      ++refused;
    } else {
      EXPECT_EQ(t.render(messages, options), c["rendered"].get<std::string>()) << label;
      ++rendered;
    }
  }
  EXPECT_GT(rendered, 150u);
  EXPECT_GT(refused, 10u);
}

TEST(ChatTemplate, DetectsQwen3FromTokenizerFolder) {
  ChatTemplate t = ChatTemplate::detect(testing::qwen3_tokenizer(), "qwen3");
  EXPECT_EQ(t.format(), ChatFormat::kQwen3);
  ChatOptions no_think;
  no_think.enable_thinking = false;
  EXPECT_EQ(t.render({{"user", "hi", ""}}, no_think),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplate, FallsBackToModelType) {
  Tokenizer gpt2 = testing::gpt2_tokenizer();  // no chat template
  EXPECT_EQ(ChatTemplate::detect(gpt2, "qwen3").format(), ChatFormat::kQwen3);
  EXPECT_EQ(ChatTemplate::detect(gpt2, "qwen2").format(), ChatFormat::kChatML);
  EXPECT_EQ(ChatTemplate::detect(gpt2, "llama").format(), ChatFormat::kLlama2);
  EXPECT_EQ(ChatTemplate::detect(gpt2, "mistral").format(), ChatFormat::kMistral);
  // GPT-2 has <|endoftext|> as bos/eos, which the Llama-2 rendering then uses.
  EXPECT_EQ(ChatTemplate::detect(gpt2, "llama").render({{"user", "x", ""}}),
            "<|endoftext|>[INST] x [/INST]");
  EXPECT_THROW(ChatTemplate::detect(gpt2, "gpt2"), Error);
}

TEST(ChatTemplate, DetectsLlama3FromVocab) {
  Tokenizer t = testing::gpt2_tokenizer();
  // No Llama-3 vocab in the assets; an overridden template text stands in for detection by text.
  t.set_chat_template_source(fixtures()["templates"]["llama3"]["source"].get<std::string>());
  EXPECT_EQ(ChatTemplate::detect(t, "llama").format(), ChatFormat::kLlama3);
}

TEST(ChatTemplate, QwenDefaultSystemPrompt) {
  ChatTemplate t =
      ChatTemplate::from_source(fixtures()["templates"]["qwen2"]["source"].get<std::string>());
  EXPECT_EQ(t.default_system(), "You are a helpful assistant.");
  EXPECT_EQ(ChatTemplate::of(ChatFormat::kChatML).default_system(), "");
}

TEST(ChatTemplate, RefusesUnknownTemplates) {
  try {
    ChatTemplate::from_source("{% for m in messages %}<|user|>{{ m.content }}{% endfor %}");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("supported templates: Qwen3"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ChatTemplate::from_source(
                   "<|start_header_id|>{{ 'Cutting Knowledge Date: December 2023' }}<|eot_id|>"),
               Error);
}

TEST(ChatTemplate, RefusesToolRolesAndEmptyConversations) {
  for (ChatFormat f : {ChatFormat::kQwen3, ChatFormat::kChatML, ChatFormat::kLlama3,
                       ChatFormat::kLlama2, ChatFormat::kMistral}) {
    ChatTemplate t = ChatTemplate::of(f);
    try {
      t.render({{"user", "hi", ""}, {"tool", "{}", ""}});
      FAIL() << "expected an Error for " << t.name();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("\"tool\""), std::string::npos) << e.what();
    }
    EXPECT_THROW(t.render({}), Error) << t.name();
  }
}

}  // namespace
}  // namespace bitdelta
