// The bitdelta command line, run as a real process.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace bitdelta {
namespace {

using testing::run_cli;
using testing::ScratchDir;

// fmt rather than "'" + s: GCC 12's -Wrestrict misfires on the latter.
std::string quoted(const std::filesystem::path& p) { return fmt::format("'{}'", p.string()); }

// generate --prompt P prints P and then its continuation; that must be what decoding the prompt's
// ids followed by the generated ids gives (tokenize --decode, the non-streaming decoder).
void expect_prompt_plus_text_is_decode(const std::filesystem::path& model,
                                       const std::string& prompt) {
  const std::string m = quoted(model);
  auto text =
      run_cli("generate --model " + m + " --no-bos --ignore-eos -n 12 --prompt '" + prompt + "'");
  auto gen = run_cli("generate --model " + m +
                     " --no-bos --ignore-eos -n 12 --print-ids --prompt '" + prompt + "'");
  auto ids = run_cli("tokenize --model " + m + " --text '" + prompt + "'");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  std::string all =
      ids.out.substr(0, ids.out.find('\n')) + " " + gen.out.substr(0, gen.out.find('\n'));
  auto decoded = run_cli("tokenize --model " + m + " --decode --text '" + all + "'");
  ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(text.out, decoded.out) << "prompt '" << prompt << "', ids " << all;
}

TEST(Cli, HelpListsEveryCommandAndEachCommandHasHelp) {
  auto top = run_cli("--help");
  EXPECT_EQ(top.exit_code, 0);
  for (const char* command : {"import-llama2c", "info", "tokenize", "generate", "logits", "synth",
                              "compress", "inspect", "merge", "eval", "finetune", "calibrate",
                              "store", "serve", "analyze", "examples", "import-assistments"}) {
    EXPECT_NE(top.out.find(command), std::string::npos) << command;
    auto help = run_cli(std::string(command) + " --help");
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_NE(help.out.find("Options"), std::string::npos) << help.out;
  }
  auto none = run_cli("");
  EXPECT_NE(none.exit_code, 0);
  // A mistyped command is named, with the ones that exist.
  auto unknown = run_cli("frobnicate --x 1");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("'frobnicate' is not a command of bitdelta"), std::string::npos)
      << unknown.err;
  EXPECT_NE(unknown.err.find("generate"), std::string::npos) << unknown.err;
  auto nested = run_cli("-v store nosuch");
  EXPECT_NE(nested.exit_code, 0);
  EXPECT_NE(nested.err.find("'nosuch' is not a command of bitdelta store; the commands are: add"),
            std::string::npos)
      << nested.err;
  EXPECT_EQ(run_cli("store --help").exit_code, 0);
  // Out-of-range numbers: the bound as written, not a 309-digit double.
  for (const char* bad : {"generate --model . -n -5", "generate --model . -n abc",
                          "eval --base . --data x --seq-len 0"}) {
    auto r = run_cli(bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_LT(r.err.size(), 200u) << bad << ": " << r.err;
    EXPECT_TRUE(r.err.find("must be ≥ 0") != std::string::npos ||
                r.err.find("must be > 0") != std::string::npos ||
                r.err.find("is not a number") != std::string::npos)
        << bad << ": " << r.err;
  }
}

TEST(Cli, ImportInfoAndTokenizeStories260K) {
  ScratchDir dir;
  auto model = dir / "stories";
  auto imported = run_cli("import-llama2c --model " +
                          quoted(testing::shared_asset("models/stories260K/stories260K.bin")) +
                          " --tokenizer " +
                          quoted(testing::shared_asset("models/stories260K/tok512.bin")) +
                          " --out " + quoted(model));
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_NE(imported.out.find("260032 parameters"), std::string::npos) << imported.out;

  auto info = run_cli("info " + quoted(model));
  EXPECT_EQ(info.exit_code, 0) << info.out << info.err;
  EXPECT_NE(info.out.find("llama"), std::string::npos);
  EXPECT_NE(info.out.find("260032 parameters"), std::string::npos) << info.out;

  auto info_json = run_cli("info --json " + quoted(model));
  ASSERT_EQ(info_json.exit_code, 0);
  auto j = nlohmann::json::parse(info_json.out);
  EXPECT_EQ(j["weights"]["parameters"], 260032);
  EXPECT_EQ(j["weights"]["dtypes"]["F32"]["bytes"], 260032 * 4);
  EXPECT_EQ(j["architecture"]["kv_heads"], 4);
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 512);
  EXPECT_TRUE(j["problems"].empty());

  auto ids = run_cli("tokenize --model " + quoted(model) + " --text 'Once upon a time'");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  auto text = run_cli("tokenize --model " + quoted(model) + " --decode --text '" + ids.out + "'");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "Once upon a time\n");
}

TEST(Cli, GenerateLogitsAndSynth) {
  ScratchDir dir;
  auto model = dir / "stories";
  ASSERT_EQ(run_cli("import-llama2c --model " +
                    quoted(testing::shared_asset("models/stories260K/stories260K.bin")) +
                    " --tokenizer " + quoted(testing::shared_asset("models/stories260K/tok512.bin")) +
                    " --out " + quoted(model))
                .exit_code,
            0);
  // Greedy from BOS: the first tokens of llama2.c's golden output.
  auto ids = run_cli("generate --model " + quoted(model) + " --prompt-ids 1 -n 8 --print-ids");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(ids.out, "403 407 261 378 432 383 286 261\n");
  EXPECT_NE(ids.err.find("tokens/s"), std::string::npos) << ids.err;
  auto text = run_cli("generate --model " + quoted(model) + " --prompt 'Once upon a time' -n 20");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("Once upon a time, there was a little girl named Lily", 0), 0u)
      << text.out;
  // A continuation keeps the space after the prompt: what generate prints (prompt, then text)
  // is the decode of the prompt's ids followed by the generated ids, on a sentencepiece
  // tokenizer (whose decoder drops a text's leading space) and a byte-level one.
  for (const auto& [m, prompt] : {std::pair{model, std::string("Once upon a")},
                                  std::pair{model, std::string("Lily went to the")}}) {
    expect_prompt_plus_text_is_decode(m, prompt);
  }
  auto printed = run_cli("generate --model " + quoted(model) + " --prompt 'Once upon a' -n 3");
  EXPECT_EQ(printed.out.rfind("Once upon a time", 0), 0u) << printed.out;
  auto stopped = run_cli("generate --model " + quoted(model) +
                         " --prompt 'Once upon a time' -n 50 --stop Lily");
  EXPECT_EQ(stopped.out, "Once upon a time, there was a little girl named \n");
  auto sampled1 = run_cli("generate --model " + quoted(model) +
                          " --prompt-ids 1 -n 30 -t 0.8 --top-k 40 --seed 3 --print-ids");
  auto sampled2 = run_cli("generate --model " + quoted(model) +
                          " --prompt-ids 1 -n 30 -t 0.8 --top-k 40 --seed 3 --print-ids");
  EXPECT_EQ(sampled1.out, sampled2.out);
  // More tokens than the context holds: said before generating, and clamped.
  auto long_run = run_cli("generate --model " + quoted(model) +
                          " --prompt-ids 1 -n 2000 --ignore-eos --print-ids");
  ASSERT_EQ(long_run.exit_code, 0) << long_run.err;
  EXPECT_EQ(long_run.err.rfind("note: --max-tokens 2000 does not fit: the context holds 512 "
                               "positions and the prompt takes 1, so at most 511",
                               0),
            0u)
      << long_run.err;
  EXPECT_NE(long_run.err.find("decode: 510 tokens"), std::string::npos) << long_run.err;
  auto bad = run_cli("generate --model " + quoted(model) + " --prompt-ids 1,9999 -n 3");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("out of range"), std::string::npos) << bad.err;
  auto bad_temp = run_cli("generate --model " + quoted(model) + " --prompt x -t -1");
  EXPECT_EQ(bad_temp.exit_code, 1);

  auto logits = run_cli("logits --model " + quoted(model) + " --ids 1,403,407 --out " +
                        quoted(dir / "logits.safetensors"));
  ASSERT_EQ(logits.exit_code, 0) << logits.err;
  auto info = run_cli("info --json " + quoted(model));
  EXPECT_EQ(info.exit_code, 0);

  auto synth = run_cli("synth --like tiny --out " + quoted(dir / "tiny") + " --seed 4");
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  auto synth_info = run_cli("info --json " + quoted(dir / "tiny"));
  ASSERT_EQ(synth_info.exit_code, 0) << synth_info.out;
  auto j = nlohmann::json::parse(synth_info.out);
  EXPECT_EQ(j["architecture"]["model_type"], "qwen3");
  EXPECT_EQ(j["weights"]["dtypes"].begin().key(), "BF16");
  expect_prompt_plus_text_is_decode(dir / "tiny", "hello wor");
  auto chat = run_cli("generate --model " + quoted(dir / "tiny") + " --chat --prompt hi -n 5");
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
  auto unknown = run_cli("synth --like gpt-5 --out " + quoted(dir / "x"));
  EXPECT_NE(unknown.exit_code, 0);
}

// synth --like qwen3-* fails loudly, writing nothing, when the real Qwen3 tokenizer its --help
// promises cannot be found (tests/model has the positive case).
TEST(Cli, SynthWithoutTheSharedAssetsFailsLoudly) {
  ScratchDir dir;
  auto missing = testing::run_command("cd / && BITDELTA_SHARED_ASSETS=" + quoted(dir.path()) +
                                      " '" + testing::cli_path() +
                                      "' synth --like qwen3-0.6b --out " + quoted(dir / "m"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("holds no tokenizers/qwen3/tokenizer.json"), std::string::npos)
      << missing.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "m" / "model.safetensors"));
}

TEST(Cli, TokenizeWithOnlyTokenizerFiles) {
  auto qwen = testing::shared_asset("tokenizers/qwen3");
  auto r = run_cli("tokenize --model " + quoted(qwen) +
                   " --json --text \"$(printf '<|im_start|>user\\nhi<|im_end|>')\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json({151644, 872, 198, 6023, 151645}));
  auto plain = run_cli("tokenize --model " + quoted(qwen) + " --text 'Hello world'");
  EXPECT_EQ(plain.out, "9707 1879\n");
  auto decoded = run_cli("tokenize --model " + quoted(qwen) + " --decode --json --text '[9707,1879]'");
  EXPECT_EQ(decoded.out, "\"Hello world\"\n");

  ScratchDir dir;
  testing::write_text(dir / "in.txt", "Hello world");
  auto from_file = run_cli("tokenize --model " + quoted(qwen) + " --file " + quoted(dir / "in.txt"));
  EXPECT_EQ(from_file.out, "9707 1879\n");
}

TEST(Cli, BadInputGivesClearErrorsAndNonZeroExit) {
  ScratchDir dir;
  auto missing = run_cli("info " + quoted(dir / "nope"));
  EXPECT_NE(missing.exit_code, 0);
  auto empty = run_cli("info " + quoted(dir.path()));
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.out.find("no model weights"), std::string::npos) << empty.out;

  auto qwen = testing::shared_asset("tokenizers/qwen3");
  auto bad_ids = run_cli("tokenize --model " + quoted(qwen) + " --decode --text '1 two 3'");
  EXPECT_EQ(bad_ids.exit_code, 1);
  EXPECT_NE(bad_ids.err.find("'two' is not a token id"), std::string::npos) << bad_ids.err;
  auto out_of_range = run_cli("tokenize --model " + quoted(qwen) + " --decode --text '999999999'");
  EXPECT_EQ(out_of_range.exit_code, 1);
  EXPECT_NE(out_of_range.err.find("error:"), std::string::npos);

  testing::write_text(dir / "config.json", "{\"model_type\": \"gemma\"}");
  testing::write_text(dir / "model.safetensors", "garbage");
  auto bad_model = run_cli("info " + quoted(dir.path()));
  EXPECT_EQ(bad_model.exit_code, 1);
  EXPECT_NE(bad_model.err.find("gemma"), std::string::npos) << bad_model.err;

  auto bad_import = run_cli("import-llama2c --model " + quoted(dir / "model.safetensors") +
                            " --tokenizer " + quoted(dir / "model.safetensors") + " --out " +
                            quoted(dir / "out"));
  EXPECT_EQ(bad_import.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

}  // namespace
}  // namespace bitdelta
