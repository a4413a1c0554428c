// The documented bound of docs/quantized-bases.md, measured end to end with the CLI on the real
// stories260K and a real fine-tune (Shakespeare, the demo's steps 6-8): the held-out NLL of
// base + 1-bit adapter on a Q8_0 base stays within 0.5% of that on the original base, and on a
// Q4_0 base within 10% (a 260K-parameter model is the hard case for 4 bits).
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace bitdelta {
namespace {

using testing::run_cli;

std::string q(const std::filesystem::path& p) {
  std::string out = "'";
  out += p.string();
  out += '\'';
  return out;
}

TEST(QuantizedQuality, BaseAndAdapterNllWithinTheDocumentedBound) {
  testing::ScratchDir dir;
  const auto base = dir / "stories260K", ft = dir / "ft", data = dir / "user.txt",
             adapter = dir / "user.bdelta";
  ASSERT_EQ(
      0, run_cli("import-llama2c --model " +
                 q(testing::shared_asset("models/stories260K/stories260K.bin")) + " --tokenizer " +
                 q(testing::shared_asset("models/stories260K/tok512.bin")) + " --out " + q(base))
             .exit_code);
  const std::string text = testing::read_text(testing::shared_asset("corpora/tinyshakespeare.txt"));
  testing::write_text(data, text.substr(0, 60000));
  auto r =
      run_cli("finetune --model " + q(base) + " --data " + q(data) + " --token-range 0:0.9 --out " +
              q(ft) + " --steps 200 --batch 16 --seq-len 128 --lr 1e-3 --log-every 1000");
  ASSERT_EQ(0, r.exit_code) << r.err;
  r = run_cli("compress --base " + q(base) + " --finetuned " + q(ft) + " --out " + q(adapter) +
              " --granularity row --calibrate-data " + q(data) +
              " --calibrate-token-range 0:0.9 --calibrate-loss kl --calibrate-steps 400"
              " --calibrate-lr 1e-3");
  ASSERT_EQ(0, r.exit_code) << r.err;
  double nll[3];
  const char* formats[3] = {"none", "q8_0", "q4_0"};
  for (int i = 0; i < 3; ++i) {
    r = run_cli("eval --base " + q(base) + " --adapter " + q(adapter) + " --data " + q(data) +
                " --token-range 0.9:1 --windows 0 --json --quantize " + formats[i]);
    ASSERT_EQ(0, r.exit_code) << r.err;
    nll[i] = nlohmann::json::parse(r.out)["models"]["bitdelta"]["nll"].get<double>();
    std::printf("base + adapter on %s: held-out NLL %.4f\n", formats[i], nll[i]);
  }
  EXPECT_LE(nll[1], nll[0] * 1.005);
  EXPECT_LE(nll[2], nll[0] * 1.10);
}

}  // namespace
}  // namespace bitdelta
