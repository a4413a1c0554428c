// Fine-tuning and scale distillation end to end on the real stories260K: determinism, resuming a
// stopped run, calibration lowering the distillation loss and recording itself, bad input.
#include "train/finetune.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "io/safetensors.h"
#include "support/test_support.h"
#include "train/calibrate.h"
#include "train/privacy.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;

class FinetuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = scratch_ / "base";
    testing::make_base(base_);
    data_ = scratch_ / "user.txt";
    // A small "user dataset": Shakespeare, far from the model's children's stories.
    std::string text = read_file(testing::shared_asset("corpora/tinyshakespeare.txt"));
    testing::write_text(data_, text.substr(0, 20000));
  }
  FinetuneOptions options(const std::string& out) const {
    FinetuneOptions f;
    f.model = base_;
    f.data = data_;
    f.out = scratch_ / out;
    f.steps = 6;
    f.batch = 2;
    f.seq_len = 32;
    f.lr = 1e-3;
    f.seed = 5;
    return f;
  }
  testing::ScratchDir scratch_;
  fs::path base_, data_;
};

TEST_F(FinetuneTest, LearnsIsDeterministicAndResumesExactly) {
  ThreadPool& pool = default_thread_pool();
  FinetuneOptions full = options("full");
  full.steps = 12;
  FinetuneResult r = finetune(full, {}, pool);
  EXPECT_EQ(r.steps_run, 12);
  EXPECT_LT(r.last_loss, r.first_loss);  // Shakespeare is new to a model of children's stories
  EXPECT_TRUE(fs::exists(full.out / "config.json"));
  EXPECT_TRUE(fs::exists(full.out / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(full.out / "checkpoint"));
  const std::string weights = read_file(full.out / "model.safetensors");

  FinetuneOptions again = full;
  again.out = scratch_ / "again";
  finetune(again, {}, pool);
  EXPECT_EQ(read_file(again.out / "model.safetensors"), weights) << "not deterministic";

  FinetuneOptions part = full;
  part.out = scratch_ / "resumed";
  part.stop_after = 5;
  FinetuneResult stopped = finetune(part, {}, pool);
  EXPECT_TRUE(stopped.stopped);
  EXPECT_TRUE(fs::exists(part.out / "checkpoint/model.safetensors"));
  EXPECT_TRUE(fs::exists(part.out / "checkpoint/trainer_state.safetensors"));
  part.stop_after = 0;
  part.resume = true;
  FinetuneResult resumed = finetune(part, {}, pool);
  EXPECT_EQ(resumed.resumed_from, 5);
  EXPECT_EQ(resumed.steps_run, 7);
  EXPECT_EQ(read_file(part.out / "model.safetensors"), weights) << "resume differs";

  // Resuming with other settings is refused.
  FinetuneOptions other = options("other");
  other.stop_after = 2;
  finetune(other, {}, pool);
  other.stop_after = 0;
  other.resume = true;
  other.lr = 5e-4;
  EXPECT_THROW(finetune(other, {}, pool), Error);
}

TEST_F(FinetuneTest, CalibrationLowersTheLossAndRecordsItself) {
  ThreadPool& pool = default_thread_pool();
  FinetuneOptions f = options("ft");
  f.steps = 20;
  finetune(f, {}, pool);
  CompressOptions co;
  co.granularity = ScaleGranularity::kRow;
  compress_adapter(base_, f.out, scratch_ / "a.bdelta", co, pool);

  CalibrateOptions c;
  c.base = base_;
  c.finetuned = f.out;
  c.adapter = scratch_ / "a.bdelta";
  c.data = testing::shared_asset("corpora/web_sentences_en.txt");
  c.out = scratch_ / "cal.bdelta";
  c.steps = 30;
  c.batch = 2;
  c.seq_len = 64;
  c.lr = 1e-3;
  int64_t steps_seen = 0;
  CalibrationResult r = calibrate_adapter(c, [&](const CalibrateStep&) { ++steps_seen; }, pool);
  EXPECT_EQ(steps_seen, 30);
  EXPECT_LT(r.loss_after, r.loss_before);
  auto adapter = Adapter::open(c.out);  // valid, all scales finite and ≥ 0
  auto record = nlohmann::json::parse(adapter->metadata().at("calibration"));
  EXPECT_EQ(record["steps"], 30);
  EXPECT_EQ(record["loss"], "mse");
  EXPECT_DOUBLE_EQ(record["loss_before"].get<double>(), r.loss_before);
  EXPECT_EQ(record["data_sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(adapter->metadata().at("adapter_id"),
            Adapter::open(c.adapter)->metadata().at("adapter_id"));

  // Activation-aware initialisation alone (no steps) already lowers the loss.
  c.steps = 0;
  c.init = ScaleInit::kActivationAware;
  c.out = scratch_ / "aa.bdelta";
  CalibrationResult aa = calibrate_adapter(c, {}, pool);
  EXPECT_LT(aa.loss_after, aa.loss_before);

  // KL works too and is recorded.
  c.init = ScaleInit::kFile;
  c.steps = 10;
  c.loss = DistillLoss::kKl;
  c.out = scratch_ / "kl.bdelta";
  CalibrationResult kl = calibrate_adapter(c, {}, pool);
  EXPECT_LT(kl.loss_after, kl.loss_before);
  EXPECT_EQ(nlohmann::json::parse(Adapter::open(c.out)->metadata().at("calibration"))["loss"],
            "kl");
}

TEST_F(FinetuneTest, CommandLineAndBadInput) {
  const std::string ft = (scratch_ / "cli_ft").string();
  auto r = testing::run_cli("finetune --model " + base_.string() + " --data " + data_.string() +
                            " --out " + ft + " --steps 3 --batch 2 --seq-len 32 --log-every 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("step     3/3"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("wrote"), std::string::npos);

  r = testing::run_cli("finetune --model " + base_.string() + " --data " + data_.string() +
                       " --out " + (scratch_ / "x").string() + " --resume --steps 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no checkpoint"), std::string::npos) << r.err;

  testing::write_text(scratch_ / "short.txt", "Hi.");
  r = testing::run_cli("finetune --model " + base_.string() + " --data " +
                       (scratch_ / "short.txt").string() + " --out " + (scratch_ / "y").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(fs::exists(scratch_ / "y/model.safetensors"));

  // compress + calibrate in one command; an adapter for another base is refused, nothing written.
  const std::string adapter = (scratch_ / "one.bdelta").string();
  r = testing::run_cli("compress --base " + base_.string() + " --finetuned " + ft + " --out " +
                       adapter + " --calibrate-data " + data_.string() +
                       " --calibrate-steps 5 --calibrate-batch 2 --calibrate-seq-len 32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NO_THROW(nlohmann::json::parse(Adapter::open(adapter)->metadata().at("calibration")));
  // Calibration shows its progress (it can take minutes) and the timing line says what it times.
  EXPECT_NE(r.err.find("calibrating the scales (5 steps"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step    5/5  loss"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("compression alone (without calibration)"), std::string::npos) << r.out;
  r = testing::run_cli("compress --base " + base_.string() + " --finetuned " + ft + " --out " +
                       (scratch_ / "quiet.bdelta").string() + " --calibrate-data " +
                       data_.string() +
                       " --calibrate-steps 2 --calibrate-batch 2 "
                       "--calibrate-seq-len 32 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("step"), std::string::npos) << r.err;

  const fs::path other = scratch_ / "other_base";
  testing::make_finetune(base_, other, 9, 0.05f);
  r = testing::run_cli("calibrate --base " + other.string() + " --finetuned " + ft +
                       " --adapter " + adapter + " --data " + data_.string() + " --out " +
                       (scratch_ / "bad.bdelta").string() + " --steps 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error:"), std::string::npos);
  EXPECT_FALSE(fs::exists(scratch_ / "bad.bdelta"));
}

}  // namespace
}  // namespace bitdelta

namespace bitdelta {
namespace {

// DP-SGD: the noise multiplier is set so the whole run spends at most its ε (and nearly all of
// it), ε grows step by step as the accountant says, the noise comes from the OS (two runs with
// the same seed differ, where non-private ones are bitwise equal), and data it cannot protect
// example by example, or a δ too large for the data, is refused.
TEST_F(FinetuneTest, DpSgdSpendsItsBudgetAndRefusesWhatItCannotProtect) {
  std::string jsonl;
  for (int i = 0; i < 40; ++i) {
    jsonl += nlohmann::json{{"prompt", "Tell me about day " + std::to_string(i) + "."},
                            {"response", "On day " + std::to_string(i) + " the sun was warm."}}
                 .dump() +
             "\n";
  }
  testing::write_text(scratch_ / "user.jsonl", jsonl);
  FinetuneOptions f = options("dp1");
  f.data = scratch_ / "user.jsonl";
  f.steps = 10;
  f.batch = 4;
  f.dp_epsilon = 3;
  f.dp_delta = 1e-3;
  f.dp_clip = 0.5;
  ThreadPool pool(2);
  std::vector<double> eps;
  const FinetuneResult r = finetune(
      f, [&](const FinetuneStep& s) { eps.push_back(s.epsilon); }, pool);
  EXPECT_DOUBLE_EQ(r.dp_sample_rate, 0.1);
  EXPECT_GT(r.dp_noise_multiplier, 0.5);
  EXPECT_LE(r.dp_epsilon_spent, 3.0);
  EXPECT_GT(r.dp_epsilon_spent, 2.95);
  EXPECT_DOUBLE_EQ(r.dp_epsilon_spent,
                   dp_sgd_epsilon(0.1, r.dp_noise_multiplier, 10, 1e-3).epsilon);
  ASSERT_EQ(eps.size(), 10u);
  for (size_t i = 1; i < eps.size(); ++i) EXPECT_GT(eps[i], eps[i - 1]);
  EXPECT_TRUE(std::isfinite(r.last_loss));

  FinetuneOptions again = f;
  again.out = scratch_ / "dp2";
  finetune(again, {}, pool);
  EXPECT_NE(read_file(scratch_ / "dp1" / "model.safetensors"),
            read_file(scratch_ / "dp2" / "model.safetensors"))
      << "DP noise must not be reproducible from the seed";

  FinetuneOptions text = f;
  text.data = data_;
  text.out = scratch_ / "dp3";
  EXPECT_NE(testing::error_message([&] { finetune(text, {}, pool); }).find("needs JSONL examples"),
            std::string::npos);
  FinetuneOptions big_delta = f;
  big_delta.dp_delta = 0.05;
  big_delta.out = scratch_ / "dp4";
  EXPECT_NE(testing::error_message([&] { finetune(big_delta, {}, pool); }).find("--dp-delta"),
            std::string::npos);
}

}  // namespace
}  // namespace bitdelta
