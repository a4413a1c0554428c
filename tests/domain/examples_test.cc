// Personal training examples: the user's own conversations after a system prompt stating their
// analytics, split in time; gaming exchanges as conversations; too little data refused; the
// output loads as finetune data on Qwen3's template.
#include "domain/examples.h"

#include <gtest/gtest.h>

#include "support/test_support.h"
#include "tokenizer/chat_template.h"
#include "train/data.h"
#include "util/error.h"

namespace bitdelta {
namespace {

std::string error_of(const std::function<void()>& f) { return testing::error_message(f); }

// ann: six attempts with a tutoring conversation (times 1..6, written out of order) and two
// without; bob: one. The most recent conversation (time 6) is held out; the two attempts without
// a conversation count as interactions only.
std::string education_file() {
  std::string text;
  for (int t : {3, 1, 6, 2, 5, 4}) {
    text += R"({"learner": "ann", "time": )" + std::to_string(t) +
            R"(, "skill": "fractions", "prerequisites": ["add"], "correct": false, "messages": [)";
    if (t == 2) text += R"({"role": "system", "content": "Session 2."}, )";
    text += R"({"role": "user", "content": "Attempt )" + std::to_string(t) +
            R"("}, {"role": "assistant", "content": "Hint )" + std::to_string(t) +
            R"("}]})"
            "\n";
  }
  text += R"({"learner": "ann", "time": 7, "skill": "add", "correct": true})"
          "\n";
  text += R"({"learner": "ann", "time": 8, "skill": "add", "correct": true})"
          "\n";
  text +=
      R"({"learner": "bob", "time": 1, "skill": "add", "correct": true, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})"
      "\n";
  return text;
}

TEST(PersonalExamples, EducationConversationsAfterTheAnalyticsSplitInTime) {
  testing::ScratchDir dir;
  testing::write_text(dir / "e.jsonl", education_file());
  const PersonalExamples e = build_personal_examples("education", dir / "e.jsonl", "ann");
  EXPECT_EQ(e.interactions, 8);
  EXPECT_EQ(e.conversations, 6);
  ASSERT_EQ(e.train.size(), 5u);
  ASSERT_EQ(e.heldout.size(), 1u);
  // Oldest first; the held-out one is the most recent.
  EXPECT_EQ(e.train[0][1].content, "Attempt 1");
  EXPECT_EQ(e.train[4][1].content, "Attempt 5");
  EXPECT_EQ(e.heldout[0][1].content, "Attempt 6");
  // The system prompt states the analytics (add: two correct → proficient; fractions failed six
  // times → novice; add is a prerequisite gap under fractions) and leads every conversation,
  // merged with a conversation's own system message.
  EXPECT_NE(e.system_prompt.find("fractions novice"), std::string::npos) << e.system_prompt;
  EXPECT_NE(e.system_prompt.find("add proficient"), std::string::npos) << e.system_prompt;
  EXPECT_NE(e.system_prompt.find("Prerequisite gaps to revisit first: add"), std::string::npos)
      << e.system_prompt;
  for (const auto& c : e.train) {
    ASSERT_EQ(c[0].role, "system");
    EXPECT_EQ(c[0].content.rfind(e.system_prompt, 0), 0u);
  }
  EXPECT_EQ(e.train[1][0].content, e.system_prompt + "\n\nSession 2.");
  EXPECT_EQ(e.train[1].size(), 3u);
  EXPECT_EQ(e.analytics["learner"], "ann");

  // The written files are finetune data: Qwen3's template, the replies as targets.
  write_conversations_jsonl(e.train, dir / "train.jsonl");
  write_conversations_jsonl(e.heldout, dir / "heldout.jsonl");
  const Tokenizer qwen = Tokenizer::from_folder(testing::shared_asset("tokenizers/qwen3"));
  const ChatTemplate qwen3 = ChatTemplate::of(ChatFormat::kQwen3);
  EXPECT_EQ(TrainingData::load(dir / "train.jsonl", qwen, &qwen3).examples().size(), 5u);
  EXPECT_EQ(TrainingData::load(dir / "heldout.jsonl", qwen, &qwen3).examples().size(), 1u);
}

TEST(PersonalExamples, GamingExchangesAreConversationsAndTooFewAreRefused) {
  testing::ScratchDir dir;
  std::string text;
  for (int t = 0; t < 5; ++t) {
    text += R"({"npc": "smith", "player": "ann", "time": )" + std::to_string(t) +
            R"(, "utterance": "Q)" + std::to_string(t) + R"(", "reply": "A)" + std::to_string(t) +
            R"(", "affinity_change": 0.1})"
            "\n";
  }
  testing::write_text(dir / "g.jsonl", text);
  const PersonalExamples g = build_personal_examples("gaming", dir / "g.jsonl", "smith");
  ASSERT_EQ(g.train.size(), 4u);
  ASSERT_EQ(g.heldout.size(), 1u);
  ASSERT_EQ(g.train[0].size(), 3u);
  EXPECT_EQ(g.train[0][1].content, "Q0");
  EXPECT_EQ(g.train[0][2].role, "assistant");
  EXPECT_EQ(g.train[0][2].content, "A0");
  EXPECT_NE(g.system_prompt.find("You are smith"), std::string::npos) << g.system_prompt;
  EXPECT_NE(g.system_prompt.find("ann (affinity +"), std::string::npos) << g.system_prompt;

  testing::write_text(dir / "few.jsonl", education_file());
  const std::string e =
      error_of([&] { build_personal_examples("education", dir / "few.jsonl", "bob"); });
  EXPECT_NE(e.find("user 'bob' has 1 conversation(s)"), std::string::npos) << e;
  EXPECT_NE(e.find("needs at least 5"), std::string::npos) << e;
  EXPECT_NE(error_of([&] {
              build_personal_examples("cooking", dir / "g.jsonl", "smith");
            }).find("unknown domain 'cooking'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              build_personal_examples("gaming", dir / "g.jsonl", "nobody");
            }).find("NPC 'nobody' has no records"),
            std::string::npos);
}

TEST(PersonalExamples, Cli) {
  testing::ScratchDir dir;
  testing::write_text(dir / "e.jsonl", education_file());
  auto r = testing::run_cli("examples --domain education --data '" + (dir / "e.jsonl").string() +
                            "' --user ann --train '" + (dir / "t.jsonl").string() +
                            "' --heldout '" + (dir / "h.jsonl").string() + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["train"], 5);
  EXPECT_EQ(j["heldout"], 1);
  EXPECT_TRUE(std::filesystem::exists(dir / "t.jsonl"));
  auto few = testing::run_cli("examples --domain education --data '" + (dir / "e.jsonl").string() +
                              "' --user bob --train '" + (dir / "t2.jsonl").string() +
                              "' --heldout '" + (dir / "h2.jsonl").string() + "'");
  EXPECT_EQ(few.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "t2.jsonl"));
}

}  // namespace
}  // namespace bitdelta
