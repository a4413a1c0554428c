// Training and evaluation data: token ranges, windows, seeded batches and loss masks, on the real
// stories260K and Qwen3 tokenizers.
#include "train/data.h"

#include <gtest/gtest.h>

#include <set>

#include "delta/delta_test_util.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;
using testing::write_text;

// The message of the Error `fn` throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class Data : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::make_base(dir_->path() / "stories");
    stories_ = new Tokenizer(Tokenizer::from_folder(dir_->path() / "stories"));
  }
  static void TearDownTestSuite() {
    delete stories_;
    delete dir_;
  }
  // The first `chars` bytes of Shakespeare as a text file.
  std::filesystem::path shakespeare(int64_t chars) {
    auto path = scratch_ / "shakespeare.txt";
    write_text(path, testing::read_text(testing::shared_asset("corpora/tinyshakespeare.txt"))
                         .substr(0, static_cast<size_t>(chars)));
    return path;
  }
  std::filesystem::path jsonl(const std::string& text) {
    auto path = scratch_ / "data.jsonl";
    write_text(path, text);
    return path;
  }
  static ScratchDir* dir_;
  static Tokenizer* stories_;
  ScratchDir scratch_;
};
ScratchDir* Data::dir_ = nullptr;
Tokenizer* Data::stories_ = nullptr;

TEST(TokenRange, ParsesFractionsAndRejectsTheRest) {
  DataOptions o;
  parse_token_range("0:0.9", &o);
  EXPECT_EQ(o.range_begin, 0);
  EXPECT_DOUBLE_EQ(o.range_end, 0.9);
  parse_token_range("0.9:1", &o);
  EXPECT_DOUBLE_EQ(o.range_begin, 0.9);
  EXPECT_EQ(o.range_end, 1);
  for (const char* bad :
       {"0.9", "a:b", "0.5:0.5", "0.6:0.5", "-0.1:1", "0:1.5", ":1", "0:", "0:1x"}) {
    std::string message = error_of([&] { parse_token_range(bad, &o); });
    EXPECT_NE(message.find("0 <= A < B <= 1"), std::string::npos) << bad << ": " << message;
  }
}

TEST_F(Data, TextIsOneStreamWithBosAndRangesSplitIt) {
  auto path = shakespeare(4000);
  TrainingData all = TrainingData::load(path, *stories_, nullptr);
  ASSERT_TRUE(all.is_text());
  EXPECT_EQ(all.stream()[0], *stories_->bos_id());
  EXPECT_EQ(all.num_tokens(), static_cast<int64_t>(all.stream().size()));
  EXPECT_EQ(all.num_target_tokens(), all.num_tokens() - 1);
  EXPECT_EQ(all.sha256().size(), 64u);

  DataOptions head, tail;
  parse_token_range("0:0.9", &head);
  parse_token_range("0.9:1", &tail);
  TrainingData a = TrainingData::load(path, *stories_, nullptr, head);
  TrainingData b = TrainingData::load(path, *stories_, nullptr, tail);
  std::vector<int32_t> joined = a.stream();
  joined.insert(joined.end(), b.stream().begin(), b.stream().end());
  EXPECT_EQ(joined, all.stream());
  EXPECT_NEAR(static_cast<double>(a.num_tokens()) / all.num_tokens(), 0.9, 0.01);
  EXPECT_EQ(a.sha256(), all.sha256());  // the file's, not the selection's
  EXPECT_EQ(b.describe(), fmt::format("shakespeare.txt, tokens [{}, {}) of {}", a.num_tokens(),
                                      all.num_tokens(), all.num_tokens()));

  DataOptions limited;
  limited.max_chars = 1000;
  TrainingData c = TrainingData::load(path, *stories_, nullptr, limited);
  EXPECT_LT(c.num_tokens(), all.num_tokens());
  EXPECT_NE(c.describe().find("first 1000 bytes"), std::string::npos) << c.describe();
}

// Consecutive windows share one boundary token: every token but the first is a target once.
TEST_F(Data, EvaluationWindowsCoverTheStreamWithoutOverlap) {
  TrainingData data = TrainingData::load(shakespeare(2000), *stories_, nullptr);
  const std::vector<int32_t>& s = data.stream();
  const int64_t S = 37;  // the last window is partial
  ASSERT_NE((s.size() - 1) % S, 0u);
  std::vector<Batch> batches = data.windows(S, 0, 3);
  std::vector<int32_t> targets;
  int64_t window = 0;
  for (const Batch& batch : batches) {
    EXPECT_LE(batch.batch, 3);
    EXPECT_EQ(batch.seq_len, S);
    for (int64_t b = 0; b < batch.batch; ++b, ++window) {
      EXPECT_EQ(batch.tokens[b * S], s[window * S]);
      for (int64_t i = 0; i < S; ++i) {
        const int32_t t = batch.targets[b * S + i];
        if (t < 0) continue;
        targets.push_back(t);
        if (i + 1 < S && batch.targets[b * S + i + 1] >= 0) {
          EXPECT_EQ(batch.tokens[b * S + i + 1], t);
        }
      }
    }
  }
  EXPECT_EQ(window, static_cast<int64_t>((s.size() - 1 + S - 1) / S));
  EXPECT_EQ(targets, std::vector<int32_t>(s.begin() + 1, s.end()));

  std::vector<Batch> few = data.windows(S, 4, 3);
  ASSERT_EQ(few.size(), 2u);
  EXPECT_EQ(few[0].batch + few[1].batch, 4);
  EXPECT_EQ(few[0].tokens, batches[0].tokens);
}

TEST_F(Data, TextBatchesAreAPureFunctionOfSeedAndStep) {
  TrainingData data = TrainingData::load(shakespeare(3000), *stories_, nullptr);
  const std::vector<int32_t>& s = data.stream();
  const int64_t B = 4, S = 16;
  Batch a = data.sample(7, B, S, 42);
  Batch again = data.sample(7, B, S, 42);
  EXPECT_EQ(a.tokens, again.tokens);
  EXPECT_EQ(a.targets, again.targets);
  EXPECT_NE(data.sample(8, B, S, 42).tokens, a.tokens);
  EXPECT_NE(data.sample(7, B, S, 43).tokens, a.tokens);
  EXPECT_EQ(a.target_count(), B * S);
  // Each sequence is a window of the stream: tokens then the next token as targets.
  for (int64_t b = 0; b < B; ++b) {
    auto at =
        std::search(s.begin(), s.end(), a.tokens.begin() + b * S, a.tokens.begin() + (b + 1) * S);
    ASSERT_NE(at, s.end());
    EXPECT_TRUE(std::equal(at + 1, at + S + 1, a.targets.begin() + b * S));
  }
  // Offsets reach both ends of [0, n - S - 1] over many steps.
  std::set<int32_t> firsts;
  for (int64_t step = 0; step < 2000; ++step) firsts.insert(data.sample(step, 1, S, 1).tokens[0]);
  EXPECT_GT(firsts.size(), 50u);

  TrainingData tiny = TrainingData::load(shakespeare(30), *stories_, nullptr);
  std::string message = error_of([&] { tiny.sample(0, 1, 64, 0); });
  EXPECT_NE(message.find("fewer than the 65"), std::string::npos) << message;
  std::string empty =
      error_of([&] { TrainingData::load(shakespeare(0), *stories_, nullptr).windows(8, 0, 1); });
  EXPECT_NE(empty.find("too short"), std::string::npos) << empty;
}

TEST_F(Data, PromptResponseWithoutTemplateMasksTheResponseAndEos) {
  auto path = jsonl(R"({"prompt": "Once upon a time", "response": " there was a cat."})"
                    "\n\n"
                    R"({"prompt": "The dog", "completion": " ran home."})"
                    "\n");
  TrainingData data = TrainingData::load(path, *stories_, nullptr);
  ASSERT_FALSE(data.is_text());
  ASSERT_EQ(data.examples().size(), 2u);
  const Example& ex = data.examples()[0];
  auto prompt = stories_->encode("Once upon a time", false);
  auto response = stories_->encode(" there was a cat.", false);
  std::vector<int32_t> expected{*stories_->bos_id()};
  expected.insert(expected.end(), prompt.begin(), prompt.end());
  expected.insert(expected.end(), response.begin(), response.end());
  expected.push_back(*stories_->eos_id());
  EXPECT_EQ(ex.tokens, expected);
  std::vector<uint8_t> mask(expected.size(), 1);
  std::fill(mask.begin(), mask.begin() + 1 + static_cast<std::ptrdiff_t>(prompt.size()), 0);
  EXPECT_EQ(ex.loss_mask, mask);
  EXPECT_EQ(
      data.num_target_tokens(),
      static_cast<int64_t>(response.size() + 1 + stories_->encode(" ran home.", false).size() + 1));

  // In a batch, positions predict the next token only where it is a target; padding has none.
  const int64_t S = 64;
  std::vector<Batch> w = data.windows(S, 0, 8);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0].batch, 2);
  EXPECT_EQ(w[0].target_count(), data.num_target_tokens());
  for (size_t i = 0; i + 1 < expected.size(); ++i) {
    EXPECT_EQ(w[0].tokens[i], expected[i]);
    EXPECT_EQ(w[0].targets[i], mask[i + 1] ? expected[i + 1] : -1) << i;
  }
  EXPECT_EQ(w[0].targets[expected.size() - 1], -1);
  // Longer examples are cut to S + 1 tokens.
  Batch cut = data.windows(4, 0, 1)[0];
  EXPECT_EQ(cut.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 4));
}

TEST_F(Data, JsonlBatchesShuffleEachEpochDeterministically) {
  std::string text;
  for (int i = 0; i < 10; ++i) {
    text += fmt::format(R"({{"prompt": "Story {}", "response": " The end."}})", i) + "\n";
  }
  TrainingData data = TrainingData::load(jsonl(text), *stories_, nullptr);
  ASSERT_EQ(data.examples().size(), 10u);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<std::vector<int32_t>> seen;
    for (int step = 0; step < 5; ++step) {  // 5 steps of 2 = one epoch
      Batch b = data.sample(epoch * 5 + step, 2, 8, 9);
      for (int64_t s = 0; s < 2; ++s)
        seen.insert({b.tokens.begin() + s * 8, b.tokens.begin() + s * 8 + 8});
    }
    EXPECT_EQ(seen.size(), 10u) << "epoch " << epoch;
  }
  EXPECT_EQ(data.sample(3, 2, 8, 9).tokens, data.sample(3, 2, 8, 9).tokens);
  // Batches straddle epochs: 3 does not divide 10.
  EXPECT_EQ(data.sample(3, 3, 8, 9).batch, 3);
}

class ChatData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    qwen_ = new Tokenizer(Tokenizer::from_folder(testing::shared_asset("tokenizers/qwen3")));
  }
  static void TearDownTestSuite() { delete qwen_; }
  std::filesystem::path jsonl(const std::string& text) {
    auto path = scratch_ / "chat.jsonl";
    write_text(path, text);
    return path;
  }
  // The text of an example's target tokens and of the rest.
  static std::pair<std::string, std::string> split(const Example& ex) {
    std::vector<int32_t> targets, context;
    for (size_t i = 0; i < ex.tokens.size(); ++i)
      (ex.loss_mask[i] ? targets : context).push_back(ex.tokens[i]);
    return {qwen_->decode(targets), qwen_->decode(context)};
  }
  static Tokenizer* qwen_;
  ScratchDir scratch_;
};
Tokenizer* ChatData::qwen_ = nullptr;

TEST_F(ChatData, AssistantTurnsAreTheTargetsAfterTheGenerationPrompt) {
  const ChatTemplate qwen3 = ChatTemplate::detect(*qwen_, "qwen3");
  ASSERT_EQ(qwen3.format(), ChatFormat::kQwen3);
  auto path = jsonl(
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]})");
  TrainingData data = TrainingData::load(path, *qwen_, &qwen3);
  ASSERT_EQ(data.examples().size(), 1u);
  const Example& ex = data.examples()[0];
  auto [targets, context] = split(ex);
  EXPECT_EQ(targets, "<think>\n\n</think>\n\nHello!<|im_end|>\n");
  EXPECT_EQ(context,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(
      qwen_->decode(ex.tokens),
      qwen3.render({{"system", "Be brief.", ""}, {"user", "Hi?", ""}, {"assistant", "Hello!", ""}},
                   {.add_generation_prompt = false}));
  // The template's end-of-turn token is a target.
  EXPECT_EQ(ex.tokens[ex.tokens.size() - 2], *qwen_->token_id("<|im_end|>"));
  EXPECT_EQ(ex.loss_mask[ex.tokens.size() - 2], 1);

  // prompt/response pairs become a user and an assistant turn.
  TrainingData pair =
      TrainingData::load(jsonl(R"({"prompt": "Hi?", "response": "Hello!"})"), *qwen_, &qwen3);
  EXPECT_EQ(split(pair.examples()[0]).first, "<think>\n\n</think>\n\nHello!<|im_end|>\n");
}

TEST_F(ChatData, EveryAssistantTurnOfAConversationIsMasked) {
  const ChatTemplate chatml = ChatTemplate::of(ChatFormat::kChatML);
  auto path = jsonl(
      R"({"messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "One."}, {"role": "user", "content": "B?"}, {"role": "assistant", "content": "Two."}, {"role": "user", "content": "C?"}]})");
  TrainingData data = TrainingData::load(path, *qwen_, &chatml);
  auto [targets, context] = split(data.examples()[0]);
  EXPECT_EQ(targets, "One.<|im_end|>\nTwo.<|im_end|>\n");
  // A trailing user turn has nothing after it to learn: it is left out.
  EXPECT_EQ(context,
            "<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\n<|im_start|>user\nB?"
            "<|im_end|>\n<|im_start|>assistant\n");

  // Qwen3 renders a finished turn without the think block the last turn carries, so its
  // renderings do not extend each other: each assistant turn becomes an example of its own,
  // rendered as the model sees it when it writes that turn — earlier turns as history, the
  // target the turn itself with its (empty) think block.
  const ChatTemplate qwen3 = ChatTemplate::of(ChatFormat::kQwen3);
  TrainingData per_turn = TrainingData::load(path, *qwen_, &qwen3);
  ASSERT_EQ(per_turn.examples().size(), 2u);
  auto [t0, c0] = split(per_turn.examples()[0]);
  EXPECT_EQ(c0, "<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t0, "<think>\n\n</think>\n\nOne.<|im_end|>\n");
  auto [t1, c1] = split(per_turn.examples()[1]);
  EXPECT_EQ(c1,
            "<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nOne.<|im_end|>\n"
            "<|im_start|>user\nB?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t1, "<think>\n\n</think>\n\nTwo.<|im_end|>\n");
  // Each target is exactly what the template renders for that turn after the generation prompt.
  const std::vector<ChatMessage> two = {
      {"user", "A?", ""}, {"assistant", "One.", ""}, {"user", "B?", ""}, {"assistant", "Two.", ""}};
  EXPECT_EQ(c1 + t1, qwen3.render(two, {.add_generation_prompt = false}));
}

TEST_F(ChatData, BadLinesAreNamed) {
  const ChatTemplate chatml = ChatTemplate::of(ChatFormat::kChatML);
  const std::string good = R"({"prompt": "Hi", "response": "Hello"})";
  struct Case {
    std::string line, expected;
  };
  const Case cases[] = {
      {R"({"prompt": "Hi", "response": )", "chat.jsonl:2: not valid JSON"},
      {R"(["prompt", "response"])", "chat.jsonl:2: expected a JSON object, found array"},
      {R"({"text": "Hi"})",
       R"(chat.jsonl:2: expected {"messages": [...]} or {"prompt": ..., "response": ...}, found keys [text])"},
      {R"({"prompt": "Hi"})", R"(chat.jsonl:2: the example has no "response")"},
      {R"({"prompt": 3, "response": "x"})",
       R"(chat.jsonl:2: "prompt" of the example must be a string, not number)"},
      {R"({"messages": []})", R"(chat.jsonl:2: "messages" must be a non-empty array)"},
      {R"({"messages": [{"role": "user"}]})", R"(chat.jsonl:2: message 0 has no "content")"},
      {R"({"messages": [{"role": 1, "content": "x"}]})",
       R"(chat.jsonl:2: "role" of message 0 must be a string, not number)"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})",
       R"(chat.jsonl:2: message 0 has role "tool")"},
      {R"({"messages": ["hi"]})", "chat.jsonl:2: message 0 must be an object"},
      {R"({"messages": [{"role": "user", "content": "x"}]})",
       "chat.jsonl:2: the conversation has no assistant message"},
      {R"({"messages": [{"role": "assistant", "content": "x"}]})",
       "chat.jsonl:2: the conversation starts with an assistant message"},
  };
  for (const Case& c : cases) {
    std::string message =
        error_of([&] { TrainingData::load(jsonl(good + "\n" + c.line + "\n"), *qwen_, &chatml); });
    EXPECT_NE(message.find(c.expected), std::string::npos) << c.line << "\n" << message;
  }
  // Conversations need a template; the file needs at least one example.
  std::string message = error_of([&] {
    TrainingData::load(
        jsonl(
            R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})"),
        *qwen_, nullptr);
  });
  EXPECT_NE(message.find("chat.jsonl:1: \"messages\" needs a chat template"), std::string::npos)
      << message;
  EXPECT_NE(
      error_of([&] { TrainingData::load(jsonl("\n\n"), *qwen_, nullptr); }).find("no examples"),
      std::string::npos);
}

}  // namespace
}  // namespace bitdelta
