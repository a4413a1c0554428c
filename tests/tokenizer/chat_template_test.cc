// Chat rendering against golden output of the real Jinja templates
// (tests/data/tokenizer/chat_templates.json, written by tools/gen_chat_template_fixtures.py).
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "tokenizer_test_util.h"
#include "util/error.h"
#include "util/files.h"
#include "util/python_json.h"

namespace bitdelta {
namespace {

using nlohmann::json;
using testing::test_data;

// In file order: tools are rendered with their keys in the order given.
const nlohmann::ordered_json& fixtures() {
  static const auto j =
      nlohmann::ordered_json::parse(read_file(test_data("tokenizer/chat_templates.json")));
  return j;
}

std::vector<ChatMessage> messages_of(const nlohmann::ordered_json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) {
    ChatMessage msg{m["role"].get<std::string>(), m["content"].get<std::string>(),
                    m.value("reasoning_content", std::string())};
    if (m.contains("tool_calls")) {
      for (const auto& c : m["tool_calls"]) {
        // JSON text (OpenAI's shape) or a mapping (Hugging Face's for Llama): text either way.
        const auto& arguments = c["function"]["arguments"];
        msg.tool_calls.push_back(
            {c["id"].get<std::string>(), c["function"]["name"].get<std::string>(),
             arguments.is_string() ? arguments.get<std::string>() : python_json_dumps(arguments)});
      }
    }
    msg.tool_call_id = m.value("tool_call_id", std::string());
    out.push_back(std::move(msg));
  }
  return out;
}

TEST(ChatTemplate, MatchesJinjaFixtures) {
  const auto& f = fixtures();
  size_t rendered = 0, refused = 0, with_tools = 0;
  for (const auto& c : f["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const auto& tmpl = f["templates"][name];
    ChatTemplate t = ChatTemplate::from_source(tmpl["source"].get<std::string>());
    ASSERT_EQ(t.name(), tmpl["format"].get<std::string>()) << name;
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    options.enable_thinking = c["enable_thinking"].get<bool>();
    auto messages = messages_of(c["messages"]);
    if (c.contains("tools")) {
      for (const auto& tool : c["tools"]) options.tools.push_back(python_json_dumps(tool));
      ++with_tools;
    }
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
  EXPECT_GE(with_tools, 24u);
}

// Templates that define no tools refuse them rather than drop them.
TEST(ChatTemplate, TemplatesWithoutToolsRefuseThem) {
  ChatOptions options;
  options.tools = {R"({"type": "function", "function": {"name": "f"}})"};
  std::vector<ChatMessage> user = {{"user", "Hi", ""}};
  ChatMessage call{"assistant", "", ""};
  call.tool_calls = {{"c1", "f", "{}"}};
  std::vector<ChatMessage> with_call = {{"user", "Hi", ""}, call};
  std::vector<ChatMessage> with_result = {{"user", "Hi", ""}, {"tool", "42", ""}};
  for (ChatFormat format : {ChatFormat::kChatML, ChatFormat::kLlama3, ChatFormat::kLlama2,
                            ChatFormat::kMistral, ChatFormat::kPlain}) {
    const ChatTemplate t = ChatTemplate::of(format);
    EXPECT_FALSE(t.supports_tools());
    EXPECT_THROW(t.render(user, options), Error) << t.name();
    EXPECT_THROW(t.render(with_call), Error) << t.name();
    EXPECT_THROW(t.render(with_result), Error) << t.name();
  }
  const ChatTemplate qwen3 = ChatTemplate::of(ChatFormat::kQwen3);
  EXPECT_TRUE(qwen3.supports_tools());
  EXPECT_EQ(qwen3.tool_call_syntax().open, "<tool_call>");
  EXPECT_TRUE(ChatTemplate::of(ChatFormat::kLlama31).tool_call_syntax().whole_reply);
  EXPECT_NO_THROW(qwen3.render(with_result, options));
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
  // Llama 3.2's template: 3.1's with today's date, which a fixed rendering cannot match.
  std::string llama32 = fixtures()["templates"]["llama31"]["source"].get<std::string>();
  const std::string fixed = "{%- set date_string = \"26 Jul 2024\" %}";
  llama32.replace(llama32.find(fixed), fixed.size(),
                  "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b "
                  "%Y\") %}{%- else %}" +
                      fixed + "{%- endif %}");
  try {
    ChatTemplate::from_source(llama32);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("today's date"), std::string::npos) << e.what();
  }
  EXPECT_EQ(
      ChatTemplate::from_source(fixtures()["templates"]["llama31"]["source"].get<std::string>())
          .format(),
      ChatFormat::kLlama31);
}

TEST(ChatTemplate, RefusesToolRolesAndEmptyConversations) {
  for (ChatFormat f : {ChatFormat::kQwen3, ChatFormat::kChatML, ChatFormat::kLlama3,
                       ChatFormat::kLlama2, ChatFormat::kMistral}) {
    ChatTemplate t = ChatTemplate::of(f);
    if (!t.supports_tools()) {  // Qwen3 renders tool results (MatchesJinjaFixtures)
      try {
        t.render({{"user", "hi", ""}, {"tool", "{}", ""}});
        FAIL() << "expected an Error for " << t.name();
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("\"tool\""), std::string::npos) << e.what();
      }
    }
    try {
      t.render({{"user", "hi", ""}, {"robot", "{}", ""}});
      FAIL() << "expected an Error for " << t.name();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("\"robot\""), std::string::npos) << e.what();
    }
    EXPECT_THROW(t.render({}), Error) << t.name();
  }
}

// A small tokenizer folder whose config names <s> and </s> as BOS and EOS and adds the BOS, like
// a Llama-family base without a chat template (stories260K).
Tokenizer sentencepiece_like_tokenizer(const testing::ScratchDir& dir) {
  testing::write_text(dir / "tokenizer.json", R"({"version": "1.0",
    "added_tokens": [
      {"id": 3, "content": "<s>", "special": true, "single_word": false, "lstrip": false,
       "rstrip": false, "normalized": false},
      {"id": 4, "content": "</s>", "special": true, "single_word": false, "lstrip": false,
       "rstrip": false, "normalized": false}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4},
              "merges": ["a b"]}})");
  testing::write_text(dir / "tokenizer_config.json",
                      R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true})");
  return Tokenizer::from_folder(dir.path());
}

const std::vector<ChatMessage> kPlainConversation = {{"system", "Be brief.", ""},
                                                     {"user", "Hi there", ""},
                                                     {"assistant", "Hello!", ""},
                                                     {"user", "Bye", ""}};

TEST(ChatTemplate, PlainFormatRendersTheDocumentedText) {
  testing::ScratchDir dir;
  const Tokenizer tok = sentencepiece_like_tokenizer(dir);
  ASSERT_EQ(tok.bos_id(), 3);
  ASSERT_EQ(tok.eos_id(), 4);
  ASSERT_TRUE(tok.add_bos());
  ASSERT_FALSE(tok.chat_template_source());
  const ChatTemplate t = ChatTemplate::select(tok, "llama", "plain");
  EXPECT_EQ(t.format(), ChatFormat::kPlain);
  EXPECT_EQ(t.name(), "plain");
  EXPECT_EQ(t.render(kPlainConversation),
            "<s>System: Be brief.\nUser: Hi there\nAssistant: Hello!</s>\nUser: Bye\nAssistant:");
  ChatOptions no_prompt;
  no_prompt.add_generation_prompt = false;
  EXPECT_EQ(t.render({{"system", "S", ""}, {"user", "U", ""}, {"assistant", "A", ""}}, no_prompt),
            "<s>System: S\nUser: U\nAssistant: A</s>\n");
  EXPECT_EQ(t.render({{"system", "S", ""}, {"user", "U", ""}, {"assistant", "A", ""}}),
            "<s>System: S\nUser: U\nAssistant: A</s>\nAssistant:");
  EXPECT_EQ(t.render({{"user", "U", ""}}), "<s>User: U\nAssistant:");
  // Contents are verbatim (no trimming), enable_thinking means nothing here.
  ChatOptions think;
  think.enable_thinking = false;
  EXPECT_EQ(t.render({{"user", "  two\nlines ", ""}}, think), "<s>User:   two\nlines \nAssistant:");
}

TEST(ChatTemplate, PlainFormatTakesBosAndEosFromTheTokenizer) {
  // GPT-2 names <|endoftext|> for both but does not add a BOS: no BOS text, its EOS text.
  const ChatTemplate gpt2 = ChatTemplate::select(testing::gpt2_tokenizer(), "gpt2", "plain");
  ChatOptions no_prompt;
  no_prompt.add_generation_prompt = false;
  EXPECT_EQ(gpt2.render({{"user", "U", ""}, {"assistant", "A", ""}}, no_prompt),
            "User: U\nAssistant: A<|endoftext|>\n");
  // Qwen3 has no BOS; its EOS is <|im_end|>.
  const ChatTemplate qwen = ChatTemplate::select(testing::qwen3_tokenizer(), "qwen3", "plain");
  EXPECT_EQ(qwen.render({{"user", "U", ""}, {"assistant", "A", ""}}),
            "User: U\nAssistant: A<|im_end|>\nAssistant:");
  // Without an EOS token a reply has no end: refused, saying why.
  Tokenizer no_eos = testing::gpt2_tokenizer();
  no_eos.set_eos_id(std::nullopt);
  try {
    ChatTemplate::select(no_eos, "gpt2", "plain");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("end-of-sequence"), std::string::npos) << e.what();
  }
  // Roles other than system/user/assistant and empty conversations are refused as elsewhere.
  EXPECT_THROW(gpt2.render({{"user", "hi", ""}, {"tool", "{}", ""}}), Error);
  EXPECT_THROW(gpt2.render({}), Error);
}

TEST(ChatTemplate, SelectByName) {
  const Tokenizer& gpt2 = testing::gpt2_tokenizer();  // no chat template of its own
  // auto: detect, unless the caller requires the tokenizer's own template.
  EXPECT_EQ(ChatTemplate::select(gpt2, "llama", "auto").format(), ChatFormat::kLlama2);
  EXPECT_EQ(ChatTemplate::select(gpt2, "qwen3", "auto", false).format(), ChatFormat::kQwen3);
  try {
    ChatTemplate::select(gpt2, "llama", "auto", /*require_own_template=*/true);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--chat-format"), std::string::npos) << m;
    EXPECT_NE(m.find("--chat-format plain"), std::string::npos) << m;
    EXPECT_NE(m.find("no chat template"), std::string::npos) << m;
  }
  // A tokenizer with its own template passes the requirement.
  EXPECT_EQ(ChatTemplate::select(testing::qwen3_tokenizer(), "qwen3", "auto", true).format(),
            ChatFormat::kQwen3);
  // An unknown name is refused, naming the choices.
  try {
    ChatTemplate::select(gpt2, "llama", "frobnicate");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'frobnicate'"), std::string::npos) << m;
    for (const char* choice : {"auto", "plain", "qwen3", "chatml", "llama3", "llama2", "mistral"}) {
      EXPECT_NE(m.find(choice), std::string::npos) << choice << " in " << m;
    }
  }
  EXPECT_THROW(ChatTemplate::select(gpt2, "llama", ""), Error);
  EXPECT_THROW(ChatTemplate::select(gpt2, "llama", "Plain"), Error);
}

TEST(ChatTemplate, ChoiceNamesRoundTrip) {
  const Tokenizer& gpt2 = testing::gpt2_tokenizer();
  const std::pair<const char*, ChatFormat> choices[] = {
      {"plain", ChatFormat::kPlain},   {"qwen3", ChatFormat::kQwen3},
      {"chatml", ChatFormat::kChatML}, {"llama3", ChatFormat::kLlama3},
      {"llama2", ChatFormat::kLlama2}, {"mistral", ChatFormat::kMistral}};
  for (const auto& [name, format] : choices) {
    const ChatTemplate t = ChatTemplate::select(gpt2, "gpt2", name);
    EXPECT_EQ(t.format(), format) << name;
    EXPECT_EQ(t.choice_name(), name);
    EXPECT_EQ(ChatTemplate::of(format).choice_name(), name);
    // What choice_name() says, select() takes back to the same format.
    EXPECT_EQ(ChatTemplate::select(gpt2, "gpt2", ChatTemplate::of(format).choice_name()).format(),
              format);
  }
  // Detected templates name their choice too.
  EXPECT_EQ(ChatTemplate::detect(testing::qwen3_tokenizer(), "qwen3").choice_name(), "qwen3");
  EXPECT_EQ(ChatTemplate::detect(gpt2, "llama").choice_name(), "llama2");
}

}  // namespace
}  // namespace bitdelta
