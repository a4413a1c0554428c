// Continuous batching: many concurrent requests for different adapters (and the base) decode in
// shared forwards and give exactly what each gives alone; cancellation, a full queue, chunked
// prefill and draining.
#include <gtest/gtest.h>

#include <thread>

#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "model/generate.h"
#include "serve/scheduler.h"
#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Collected {
  std::string text, finish_reason;
  int64_t completion_tokens = 0;
};

Collected collect(RequestChannel& channel) {
  Collected c;
  while (true) {
    auto e = channel.next(30s);
    if (!e) {
      ADD_FAILURE() << "no event in 30 s";
      return c;
    }
    c.text += e->text;
    if (e->done) {
      c.finish_reason = e->finish_reason;
      c.completion_tokens = e->completion_tokens;
      return c;
    }
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    testing::make_base(*dir_ / "base");
    for (int i = 0; i < 2; ++i) {
      const fs::path ft = *dir_ / ("ft" + std::to_string(i));
      testing::make_finetune(*dir_ / "base", ft, 100 + i, 0.2f);
      CompressOptions o;
      o.granularity = ScaleGranularity::kRow;
      compress_adapter(*dir_ / "base", ft, *dir_ / ("a" + std::to_string(i) + ".bdelta"), o,
                       default_thread_pool());
    }
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    model_ = Transformer::load(*dir_ / "base");
    tokenizer_.emplace(Tokenizer::from_folder(*dir_ / "base"));
    for (int i = 0; i < 2; ++i) {
      adapters_.push_back(
          open_adapter_for(*dir_ / ("a" + std::to_string(i) + ".bdelta"), *model_, pool_));
    }
  }

  std::vector<int32_t> prompt(const std::string& text) {
    std::vector<int32_t> ids{*tokenizer_->bos_id()};
    for (int32_t id : tokenizer_->encode(text)) ids.push_back(id);
    return ids;
  }

  static testing::ScratchDir* dir_;
  ThreadPool pool_{2};
  std::unique_ptr<Transformer> model_;
  std::optional<Tokenizer> tokenizer_;
  std::vector<std::shared_ptr<Adapter>> adapters_;
};
testing::ScratchDir* SchedulerTest::dir_ = nullptr;

TEST_F(SchedulerTest, ConcurrentUsersGetWhatTheyGetAlone) {
  const char* prompts[] = {"Once upon a time", "The dog", "Lily and Tom went to the park",
                           "One day", "The sun was", "A little bird"};
  struct Job {
    std::vector<int32_t> ids;
    GenerateOptions options;
    std::string expected;
  };
  std::vector<Job> jobs;
  for (int i = 0; i < 12; ++i) {
    Job j;
    j.ids = prompt(prompts[i % 6]);
    j.options.max_tokens = 20 + 7 * (i % 4);
    j.options.stop_ids = {*tokenizer_->eos_id()};
    if (i % 3 != 2) j.options.adapter = &adapters_[i % 3]->weights();
    if (i % 4 == 3) j.options.stop_strings = {"."};
    j.expected = generate(*model_, &*tokenizer_, j.ids, j.options, {}, pool_).text;
    jobs.push_back(std::move(j));
  }

  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 5, .max_queue = 64, .prefill_chunk = 3},
                      pool_);
  int64_t max_sequences = 0;
  scheduler.on_batch = [&](int64_t sequences, int64_t, double) {
    max_sequences = std::max(max_sequences, sequences);
  };
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const Job& j : jobs) {
    auto ch = scheduler.submit({j.ids, j.options, nullptr});
    ASSERT_NE(ch, nullptr);
    channels.push_back(ch);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    Collected c = collect(*channels[i]);
    EXPECT_EQ(c.text, jobs[i].expected) << "request " << i;
    EXPECT_TRUE(c.finish_reason == "stop" || c.finish_reason == "length");
  }
  EXPECT_EQ(max_sequences, 5);  // requests really shared forwards
}

TEST_F(SchedulerTest, SameAdapterSameOutputAsBaseDiffers) {
  GenerateOptions with, without;
  with.max_tokens = without.max_tokens = 30;
  with.adapter = &adapters_[0]->weights();
  const auto ids = prompt("Once upon a time");
  EXPECT_NE(generate(*model_, &*tokenizer_, ids, with, {}, pool_).tokens,
            generate(*model_, &*tokenizer_, ids, without, {}, pool_).tokens);
}

TEST_F(SchedulerTest, CancelFullQueueZeroTokensAndDrain) {
  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 1, .max_queue = 0, .prefill_chunk = 64},
                      pool_);
  GenerateOptions long_run;
  long_run.max_tokens = 400;
  auto first = scheduler.submit({prompt("Once"), long_run, nullptr});
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(scheduler.submit({prompt("Twice"), long_run, nullptr}), nullptr);  // 429
  ASSERT_TRUE(first->next(30s).has_value());  // it is running
  first->cancel();
  Collected c = collect(*first);
  EXPECT_EQ(c.finish_reason, "cancelled");
  EXPECT_LT(c.completion_tokens, 400);

  GenerateOptions none;
  none.max_tokens = 0;
  auto zero = scheduler.submit({prompt("Hi"), none, nullptr});
  ASSERT_NE(zero, nullptr);
  EXPECT_EQ(collect(*zero).finish_reason, "length");

  GenerateOptions bad;
  bad.sampling.temperature = -1;
  EXPECT_THROW(scheduler.submit({prompt("Hi"), bad, nullptr}), Error);

  GenerateOptions shortrun;
  shortrun.max_tokens = 5;
  auto last = scheduler.submit({prompt("The end"), shortrun, nullptr});
  ASSERT_NE(last, nullptr);
  scheduler.drain();  // finishes what was accepted
  EXPECT_EQ(collect(*last).completion_tokens, 5);
  EXPECT_EQ(scheduler.submit({prompt("late"), shortrun, nullptr}), nullptr);
}

}  // namespace
}  // namespace bitdelta
