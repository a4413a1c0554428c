// Continuous batching: many concurrent requests for different adapters (and the base) decode in
// shared forwards and give exactly what each gives alone; cancellation, a full queue, chunked
// prefill and draining.
#include "serve/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "model/generate.h"
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
  const char* prompts[] = {"Once upon a time", "The dog",     "Lily and Tom went to the park",
                           "One day",          "The sun was", "A little bird"};
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

// The prefix cache never changes a result: a prompt whose first blocks are restored gives
// bitwise the logits of the same prompt prefilled from scratch, for the base and for an adapter;
// a prefix is never shared across owners; and the budget holds, least recently used out first.
TEST_F(SchedulerTest, PrefixCacheRestoresExactlyWhatPrefillComputes) {
  const auto story = prompt(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park with her friends, and one day she saw a big red ball under a tree.");
  ASSERT_GT(story.size(), 40u);
  std::vector<int32_t> other = story;  // same first 32 tokens, then another ending
  other.resize(36);
  other.push_back(story[5]);
  const int64_t V = model_->config().vocab_size;
  const auto last_logits = [&](const std::vector<int32_t>& ids, const AdapterWeights* a,
                               KVCache& cache) {
    std::vector<float> logits;
    const int64_t from = cache.length();
    SequenceInput in{&cache, std::span(ids).subspan(static_cast<size_t>(from)), false, a};
    model_->forward({&in, 1}, &logits, pool_);
    return std::vector<float>(logits.end() - V, logits.end());
  };
  PrefixCache cache(model_->config(), 64ull << 20, 16);
  for (const AdapterWeights* a :
       {static_cast<const AdapterWeights*>(nullptr), &adapters_[0]->weights()}) {
    const std::string owner = a ? "adapter:0" : "";
    KVCache full = model_->new_cache();
    const auto expected = last_logits(other, a, full);
    // The story, prefilled in chunks of 5, then stored: its whole blocks are kept.
    KVCache first = model_->new_cache();
    for (size_t at = 0; at < story.size(); at += 5) {
      SequenceInput in{&first, std::span(story).subspan(at, std::min<size_t>(5, story.size() - at)),
                       false, a};
      std::vector<float> ignored;
      model_->forward({&in, 1}, &ignored, pool_);
    }
    cache.store(owner, story, static_cast<int64_t>(story.size()), first);
    // The other prompt: 32 tokens (two blocks) restored, the rest computed.
    KVCache restored = model_->new_cache();
    EXPECT_EQ(cache.restore(owner, other, static_cast<int64_t>(other.size()) - 1, restored), 32);
    const auto got = last_logits(other, a, restored);
    ASSERT_EQ(0, std::memcmp(got.data(), expected.data(), expected.size() * 4))
        << (a ? "adapter" : "base");
  }
  // Another owner (another adapter) never sees these blocks.
  KVCache none = model_->new_cache();
  EXPECT_EQ(cache.restore("adapter:1", story, 100, none), 0);
  EXPECT_EQ(none.length(), 0);
  const PrefixCacheStats st = cache.stats();
  EXPECT_EQ(st.hit_tokens, 64);
  EXPECT_GT(st.lookup_tokens, st.hit_tokens);

  // A budget of three blocks: storing the story's blocks for a new owner evicts the oldest
  // leaves first and never goes over.
  const int64_t block_bytes = static_cast<int64_t>(cache.stats().bytes / cache.stats().blocks);
  PrefixCache small(model_->config(), 3 * block_bytes, 16);
  KVCache filled = model_->new_cache();
  last_logits(story, nullptr, filled);
  small.store("", story, 32, filled);   // 2 blocks
  small.store("x", story, 32, filled);  // 2 more: one of the first owner's goes (its leaf)
  EXPECT_LE(small.stats().bytes, static_cast<uint64_t>(3 * block_bytes));
  EXPECT_EQ(small.stats().evicted_blocks, 1);
  KVCache a = model_->new_cache(), b = model_->new_cache();
  EXPECT_EQ(small.restore("x", story, 40, a), 32);  // the most recent prompt is whole
  EXPECT_EQ(small.restore("", story, 40, b), 16);   // the first lost its second block only
}

// Through the scheduler: the same prompt twice gives the same text, the second time restored.
TEST_F(SchedulerTest, RepeatedPromptsHitThePrefixCache) {
  GenerateOptions o;
  o.max_tokens = 20;
  const auto ids = prompt(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park with her friends.");
  o.adapter = &adapters_[1]->weights();
  const std::string expected = generate(*model_, &*tokenizer_, ids, o, {}, pool_).text;
  Scheduler scheduler(*model_, *tokenizer_,
                      {.max_batch = 4,
                       .max_queue = 8,
                       .prefill_chunk = 7,
                       .prefix_cache_bytes = 64ull << 20,
                       .prefix_block = 8},
                      pool_);
  for (int round = 0; round < 3; ++round) {
    auto ch = scheduler.submit({ids, o, nullptr, "adapter:1"});
    ASSERT_NE(ch, nullptr);
    EXPECT_EQ(collect(*ch).text, expected) << "round " << round;
  }
  const PrefixCacheStats st = scheduler.prefix_cache()->stats();
  EXPECT_EQ(st.lookups, 3);
  const int64_t whole = static_cast<int64_t>(ids.size() - 1) / 8 * 8;
  EXPECT_EQ(st.hit_tokens, 2 * whole);  // rounds 2 and 3
}

TEST_F(SchedulerTest, SameAdapterSameOutputAsBaseDiffers) {
  GenerateOptions with, without;
  with.max_tokens = without.max_tokens = 30;
  with.adapter = &adapters_[0]->weights();
  const auto ids = prompt("Once upon a time");
  EXPECT_NE(generate(*model_, &*tokenizer_, ids, with, {}, pool_).tokens,
            generate(*model_, &*tokenizer_, ids, without, {}, pool_).tokens);
}

// A burst of new prompts shares one prefill budget per forward, oldest first, while a running
// sequence keeps decoding; every answer is still what it is alone.
TEST_F(SchedulerTest, PromptsPrefillWithinTheBudgetWhileOthersDecode) {
  const char* texts[] = {"Once upon a time, there was a girl", "The dog ran to the big park",
                         "Lily and Tom went to the park",      "One day the sun was hot",
                         "A little bird sang a song",          "Tim had a red ball and a toy"};
  GenerateOptions o, longer;
  o.max_tokens = 12;
  longer.max_tokens = 200;  // decoding all along the burst below
  const std::string running =
      generate(*model_, &*tokenizer_, prompt("Sam"), longer, {}, pool_).text;
  std::vector<std::string> expected;
  for (const char* t : texts)
    expected.push_back(generate(*model_, &*tokenizer_, prompt(t), o, {}, pool_).text);
  Scheduler scheduler(*model_, *tokenizer_,
                      {.max_batch = 7, .max_queue = 8, .prefill_chunk = 8, .prefill_budget = 8},
                      pool_);
  std::atomic<bool> burst{false};
  std::atomic<int64_t> most_prefill = 0;  // Σ (tokens − 1) over the sequences of a forward
  scheduler.on_batch = [&](int64_t sequences, int64_t tokens, double) {
    if (burst) most_prefill = std::max(most_prefill.load(), tokens - sequences);
  };
  auto first = scheduler.submit({prompt("Sam"), longer, nullptr});
  ASSERT_NE(first, nullptr);
  std::string first_text;
  while (first_text.empty()) {  // its first token: it is decoding now
    auto e = first->next(std::chrono::milliseconds(1000));
    ASSERT_TRUE(e.has_value());
    ASSERT_FALSE(e->done);
    first_text += e->text;
  }
  burst = true;
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const char* t : texts) channels.push_back(scheduler.submit({prompt(t), o, nullptr}));
  for (size_t i = 0; i < channels.size(); ++i) {
    ASSERT_NE(channels[i], nullptr);
    EXPECT_EQ(collect(*channels[i]).text, expected[i]) << i;
  }
  EXPECT_EQ(first_text + collect(*first).text, running);
  EXPECT_GT(most_prefill, 0);
  EXPECT_LT(most_prefill, 8);  // without the budget, six 8-token chunks in one forward
}

// With no stream decoding, nobody waits on a forward but the prompts themselves: the first
// forward takes its prompts whole, not cut to the budget.
TEST_F(SchedulerTest, WithNothingDecodingWaitingPromptsPrefillWhole) {
  GenerateOptions o;
  o.max_tokens = 4;
  const char* texts[] = {"Once upon a time, there was a girl", "The dog ran to the big park",
                         "Lily and Tom went to the park"};
  std::vector<std::string> expected;
  for (const char* t : texts)
    expected.push_back(generate(*model_, &*tokenizer_, prompt(t), o, {}, pool_).text);
  Scheduler scheduler(*model_, *tokenizer_,
                      {.max_batch = 3, .max_queue = 8, .prefill_chunk = 64, .prefill_budget = 4},
                      pool_);
  std::mutex mutex;
  std::vector<int64_t> prefill;  // Σ (tokens − 1) per forward
  scheduler.on_batch = [&](int64_t sequences, int64_t tokens, double) {
    std::lock_guard lock(mutex);
    prefill.push_back(tokens - sequences);
  };
  // The engine may wake for the first submission before the others arrive, so the first forward
  // holds one to three prompts, each a chunk of 8 or more tokens, none of them decoding.
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const char* t : texts) channels.push_back(scheduler.submit({prompt(t), o, nullptr}));
  for (size_t i = 0; i < channels.size(); ++i) {
    ASSERT_NE(channels[i], nullptr);
    EXPECT_EQ(collect(*channels[i]).text, expected[i]) << i;
  }
  std::lock_guard lock(mutex);
  ASSERT_FALSE(prefill.empty());
  // The first forward held no decoding stream, so it was not cut to the budget of 4.
  EXPECT_GT(prefill.front(), 4);
}

// An idle scheduler's first arrival waits (batch_wait_ms) for the rest of a burst, here until the
// batch is full: requests submitted 50 ms apart all prefill in the first forward and start
// together, and each still gets exactly what it gets alone.
TEST_F(SchedulerTest, AnIdleServerGathersABurstIntoOneForward) {
  GenerateOptions o;
  o.max_tokens = 6;
  const char* texts[] = {"Once upon a time", "The dog ran", "Lily and Tom"};
  std::vector<std::string> expected;
  for (const char* t : texts)
    expected.push_back(generate(*model_, &*tokenizer_, prompt(t), o, {}, pool_).text);
  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 3, .max_queue = 8, .batch_wait_ms = 5000},
                      pool_);
  std::mutex mutex;
  std::vector<int64_t> sequences;
  scheduler.on_batch = [&](int64_t n, int64_t, double) {
    std::lock_guard lock(mutex);
    sequences.push_back(n);
  };
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const char* t : texts) {
    channels.push_back(scheduler.submit({prompt(t), o, nullptr}));
    std::this_thread::sleep_for(50ms);
  }
  for (size_t i = 0; i < channels.size(); ++i) {
    ASSERT_NE(channels[i], nullptr);
    EXPECT_EQ(collect(*channels[i]).text, expected[i]) << i;
  }
  std::lock_guard lock(mutex);
  ASSERT_FALSE(sequences.empty());
  EXPECT_EQ(sequences.front(), 3);
  // Every later forward decodes the three together (none started alone).
  for (size_t i = 1; i < sequences.size(); ++i) EXPECT_EQ(sequences[i], 3) << "forward " << i;
}

// n choices prefill their prompt once: the others copy its keys and values and compute only its
// last position; each samples with its own seed, and choice 0 is what n = 1 gives.
TEST_F(SchedulerTest, NChoicesPrefillThePromptOnce) {
  GenerateOptions o;
  o.max_tokens = 5;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = 11;
  const std::vector<int32_t> p = prompt("Once upon a time, there was a girl");
  const std::string alone = generate(*model_, &*tokenizer_, p, o, {}, pool_).text;
  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 4, .max_queue = 4}, pool_);
  std::atomic<int64_t> tokens = 0;
  scheduler.on_batch = [&](int64_t, int64_t t, double) { tokens += t; };
  SchedulerRequest request{p, o, nullptr};
  request.n = 3;
  auto channel = scheduler.submit(std::move(request));
  ASSERT_NE(channel, nullptr);
  std::vector<std::string> texts(3);
  std::vector<int64_t> counts(3, -1);
  for (int done = 0; done < 3;) {
    auto e = channel->next(std::chrono::milliseconds(5000));
    ASSERT_TRUE(e.has_value());
    texts.at(static_cast<size_t>(e->index)) += e->text;
    if (e->done) {
      EXPECT_EQ(e->finish_reason, "length");
      EXPECT_EQ(e->prompt_tokens, static_cast<int64_t>(p.size()));
      counts[static_cast<size_t>(e->index)] = e->completion_tokens;
      ++done;
    }
  }
  EXPECT_EQ(texts[0], alone);
  EXPECT_EQ(counts, (std::vector<int64_t>{5, 5, 5}));
  // The prompt once, one more position for each other choice, then 4 decode steps per choice.
  EXPECT_EQ(tokens.load(), static_cast<int64_t>(p.size()) + 2 + 3 * 4);
}

// A constraint that fails ends its own request with an error; the engine and the others go on.
TEST_F(SchedulerTest, AFailingConstraintEndsOnlyItsRequest) {
  struct Failing : TokenConstraint {
    void mask(std::span<float>) override {}
    void accept(int32_t) override { throw Error("no token can follow"); }
    std::unique_ptr<TokenConstraint> clone() const override { return std::make_unique<Failing>(); }
  };
  GenerateOptions o;
  o.max_tokens = 6;
  const std::vector<int32_t> p = prompt("Once upon a time");
  const std::string alone = generate(*model_, &*tokenizer_, p, o, {}, pool_).text;
  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 4, .max_queue = 4}, pool_);
  GenerateOptions failing = o;
  failing.constraint = std::make_shared<Failing>();
  SchedulerRequest bad{p, failing, nullptr};
  bad.n = 2;
  auto broken = scheduler.submit(std::move(bad));
  auto fine = scheduler.submit({p, o, nullptr});
  ASSERT_NE(broken, nullptr);
  ASSERT_NE(fine, nullptr);
  auto e = broken->next(std::chrono::milliseconds(5000));
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->done);
  EXPECT_EQ(e->finish_reason, "error");
  EXPECT_NE(e->error.find("no token can follow"), std::string::npos);
  EXPECT_EQ(collect(*fine).text, alone);
}

TEST_F(SchedulerTest, CancelFullQueueZeroTokensAndDrain) {
  Scheduler scheduler(*model_, *tokenizer_, {.max_batch = 1, .max_queue = 0, .prefill_chunk = 64},
                      pool_);
  GenerateOptions long_run;
  long_run.max_tokens = 400;
  auto first = scheduler.submit({prompt("Once"), long_run, nullptr});
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(scheduler.submit({prompt("Twice"), long_run, nullptr}), nullptr);  // 429
  ASSERT_TRUE(first->next(30s).has_value());                                   // it is running
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
