// Evaluation of base, fine-tune and adapter on stories260K: the numbers against a direct
// computation, the identities they must satisfy, and the CLI.
#include "train/eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

// fmt rather than "'" + s: GCC 12's -Wrestrict misfires on the latter.
std::string quoted(const std::filesystem::path& p) { return fmt::format("'{}'", p.string()); }

class Eval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::make_base(base());
    testing::make_finetune(base(), finetuned(), 3, 0.05f);
    ThreadPool pool(2);
    compress_adapter(base(), finetuned(), adapter(), {}, pool);
    testing::write_text(
        text(), testing::read_text(testing::shared_asset("corpora/tinystories_sample.txt")));
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path base() { return dir_->path() / "base"; }
  static std::filesystem::path finetuned() { return dir_->path() / "ft"; }
  static std::filesystem::path adapter() { return dir_->path() / "ft.bdelta"; }
  static std::filesystem::path text() { return dir_->path() / "stories.txt"; }
  static ScratchDir* dir_;
  ThreadPool pool_{2};
};
ScratchDir* Eval::dir_ = nullptr;

// The mean NLL of the data's windows, one window per forward pass, log-softmax in double.
double direct_nll(Transformer& model, const TrainingData& data, int64_t S, int64_t windows,
                  ThreadPool& pool) {
  double sum = 0;
  int64_t count = 0;
  const int64_t V = model.config().vocab_size;
  for (const Batch& batch : data.windows(S, windows, 1)) {
    KVCache cache = model.new_cache();
    SequenceInput input{&cache, batch.tokens, true, nullptr};
    std::vector<float> logits;
    model.forward({&input, 1}, &logits, pool);
    for (int64_t i = 0; i < S; ++i) {
      if (batch.targets[i] < 0) continue;
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(logits[i * V + v]));
      sum += std::log(z) - logits[i * V + batch.targets[i]];
      ++count;
    }
  }
  return sum / static_cast<double>(count);
}

TEST_F(Eval, NllMatchesADirectComputation) {
  auto model = Transformer::load(base());
  Tokenizer tokenizer = Tokenizer::from_folder(base());
  TrainingData data = TrainingData::load(text(), tokenizer, nullptr);
  EvalOptions options;
  options.seq_len = 48;
  options.max_windows = 5;
  options.batch = 2;  // 2 + 2 + 1 windows
  int64_t calls = 0;
  options.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(done, ++calls);
    EXPECT_EQ(total, 3);
  };
  EvalReport r = evaluate({model.get(), nullptr, nullptr}, data, options, pool_);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(r.windows, 5);
  EXPECT_EQ(r.target_tokens, 5 * 48);
  ASSERT_EQ(r.models.size(), 1u);
  EXPECT_EQ(r.models[0].name, "base");
  EXPECT_NEAR(r.models[0].nll, direct_nll(*model, data, 48, 5, pool_), 1e-5);
  EXPECT_DOUBLE_EQ(r.models[0].perplexity, std::exp(r.models[0].nll));
  EXPECT_FALSE(r.base_vs_finetuned);
  EXPECT_FALSE(r.quality_retained);
  // The asset README's reference point: 1.76 nats/token over the first 512 tokens.
  options.seq_len = 512;
  options.max_windows = 1;
  options.progress = nullptr;
  EXPECT_NEAR(evaluate({model.get(), nullptr, nullptr}, data, options, pool_).models[0].nll, 1.76,
              0.01);
}

TEST_F(Eval, TheBaseAgainstItselfAgreesExactly) {
  auto model = Transformer::load(base());
  auto copy = Transformer::load(base());
  Tokenizer tokenizer = Tokenizer::from_folder(base());
  TrainingData data = TrainingData::load(text(), tokenizer, nullptr);
  EvalOptions options;
  options.seq_len = 64;
  options.max_windows = 6;
  for (Transformer* ft : {copy.get(), model.get()}) {
    EvalReport r = evaluate({model.get(), ft, nullptr}, data, options, pool_);
    ASSERT_TRUE(r.base_vs_finetuned);
    EXPECT_NEAR(r.base_vs_finetuned->kl, 0, 1e-12);
    EXPECT_EQ(r.base_vs_finetuned->top1, 1);
    EXPECT_EQ(r.find("base")->nll, r.find("finetuned")->nll);
    EXPECT_FALSE(r.bitdelta_vs_finetuned);
  }
}

TEST_F(Eval, AdapterKeepsMostOfTheFinetuneAndTheCliAgrees) {
  EvalInputs inputs{base(), finetuned(), adapter(), text(), {}};
  EvalOptions options;
  options.seq_len = 64;
  options.max_windows = 8;
  EvalReport r = evaluate_files(inputs, options, pool_);
  ASSERT_EQ(r.models.size(), 3u);
  EXPECT_EQ(r.models[1].name, "finetuned");
  EXPECT_EQ(r.models[2].name, "bitdelta");
  ASSERT_TRUE(r.base_vs_finetuned && r.bitdelta_vs_finetuned && r.quality_retained);
  // The adapter is closer to the fine-tune than the base is.
  EXPECT_LT(r.bitdelta_vs_finetuned->kl, r.base_vs_finetuned->kl);
  EXPECT_GT(r.bitdelta_vs_finetuned->kl, 0);
  EXPECT_GE(r.bitdelta_vs_finetuned->top1, r.base_vs_finetuned->top1);
  EXPECT_LT(r.bitdelta_vs_finetuned->top1, 1);
  EXPECT_GT(*r.quality_retained, 0.3);
  EXPECT_LT(*r.quality_retained, 1.5);

  auto cli =
      testing::run_cli("eval --base " + quoted(base()) + " --finetuned " + quoted(finetuned()) +
                       " --adapter " + quoted(adapter()) + " --data " + quoted(text()) +
                       " --seq-len 64 --windows 8 --batch 3 --threads 1 --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.err, "");
  auto j = nlohmann::json::parse(cli.out);
  EXPECT_EQ(j["target_tokens"], r.target_tokens);
  EXPECT_EQ(j["data_sha256"], r.data_sha256);
  for (const auto& m : r.models)
    EXPECT_NEAR(j["models"][m.name]["nll"].get<double>(), m.nll, 1e-6) << m.name;
  EXPECT_NEAR(j["bitdelta_vs_finetuned"]["kl"].get<double>(), r.bitdelta_vs_finetuned->kl, 1e-6);
  EXPECT_NEAR(j["bitdelta_vs_finetuned"]["top1"].get<double>(), r.bitdelta_vs_finetuned->top1,
              1e-9);
  EXPECT_NEAR(j["base_vs_finetuned"]["top1"].get<double>(), r.base_vs_finetuned->top1, 1e-9);
  EXPECT_NEAR(j["quality_retained"].get<double>(), *r.quality_retained, 1e-4);

  auto table = testing::run_cli("eval --base " + quoted(base()) + " --finetuned " +
                                quoted(finetuned()) + " --adapter " + quoted(adapter()) +
                                " --data " + quoted(text()) + " --seq-len 64 --windows 8");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (const char* expected : {"bitdelta", "perplexity", "top-1", "quality retained:",
                               "a ratio of gains on this data: above 100% means"}) {
    EXPECT_NE(table.out.find(expected), std::string::npos) << table.out;
  }
}

TEST_F(Eval, QualityRetainedIsUnsetWhenTheFinetuneIsTheBase) {
  EvalInputs inputs{base(), base(), adapter(), text(), {}};
  EvalOptions options;
  options.seq_len = 32;
  options.max_windows = 2;
  EvalReport r = evaluate_files(inputs, options, pool_);
  EXPECT_FALSE(r.quality_retained);
  EXPECT_TRUE(to_json(r)["quality_retained"].is_null());
}

TEST_F(Eval, CliRefusesBadInput) {
  const std::string data = " --data " + quoted(text());
  struct Case {
    std::string args, expected;
  };
  testing::write_text(dir_->path() / "empty.txt", "");
  const Case cases[] = {
      {"--base " + quoted(dir_->path() / "missing") + data, "base model folder"},
      {"--base " + quoted(base()) + " --finetuned " + quoted(dir_->path() / "nope") + data,
       "fine-tuned model folder"},
      {"--base " + quoted(base()) + " --adapter " + quoted(dir_->path() / "x.bdelta") + data,
       "does not exist"},
      // The adapter was made against the base, not against the fine-tune.
      {"--base " + quoted(finetuned()) + " --adapter " + quoted(adapter()) + data,
       "this adapter was made for base"},
      {"--base " + quoted(base()) + " --data " + quoted(dir_->path() / "empty.txt"), "too short"},
      {"--base " + quoted(base()) + data + " --token-range 0.5:0.2", "0 <= A < B <= 1"},
      {"--base " + quoted(base()) + data + " --seq-len 4096", "exceeds the model's context of 512"},
      {"--base " + quoted(base()) + " --data " + quoted(dir_->path() / "none.txt"), "none.txt"},
  };
  for (const Case& c : cases) {
    auto r = testing::run_cli("eval " + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.out, "");
  }
  auto help = testing::run_cli("eval --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* option :
       {"--base", "--finetuned", "--adapter", "--data", "--token-range", "--max-chars", "--seq-len",
        "--windows", "--batch", "--json", "--threads"}) {
    EXPECT_NE(help.out.find(option), std::string::npos) << option;
  }
}

}  // namespace
}  // namespace bitdelta
