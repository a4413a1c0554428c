// synth: Qwen3 shapes get the real Qwen3 tokenizer from the shared assets whatever the working
// folder (found above the executable), or a generated one when asked.
#include "model/synth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "support/test_support.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;

TEST(Synth, Qwen3ShapesFindTheRealTokenizerFromAnyWorkingFolder) {
  const fs::path real = testing::shared_asset("tokenizers/qwen3/tokenizer.json");
  testing::ScratchDir dir;
  const fs::path cwd = fs::current_path();
  const char* env = std::getenv("BITDELTA_SHARED_ASSETS");
  const std::string saved = env != nullptr ? env : "";
  unsetenv("BITDELTA_SHARED_ASSETS");
  fs::current_path("/");  // "../shared/assets" from here is nothing
  SynthOptions options;
  options.like = "qwen3-0.6b";
  options.hidden_size = 64;  // the real shape's names and vocabulary, a small width
  options.intermediate_size = 64;
  SynthResult r;
  std::string error;
  try {
    r = synth_model(options, dir / "q");
  } catch (const Error& e) {
    error = e.what();
  }
  fs::current_path(cwd);
  if (!saved.empty()) setenv("BITDELTA_SHARED_ASSETS", saved.c_str(), 1);
  ASSERT_EQ(error, "");
  EXPECT_EQ(read_file(dir / "q" / "tokenizer.json"), read_file(real));
  EXPECT_EQ(fs::canonical(r.tokenizer_source), fs::canonical(real.parent_path()));
  // Found in shared/assets of a folder above this test executable, not through the path
  // configured at build time (the fallback).
  bool above = false;
  for (fs::path d = fs::read_symlink("/proc/self/exe").parent_path(); d != d.root_path();
       d = d.parent_path()) {
    above =
        above || fs::path(r.tokenizer_source) == d / "shared" / "assets" / "tokenizers" / "qwen3";
  }
  EXPECT_TRUE(above) << r.tokenizer_source;

  options.generated_tokenizer = true;
  r = synth_model(options, dir / "g");
  EXPECT_NE(read_file(dir / "g" / "tokenizer.json"), read_file(real));
  EXPECT_NE(r.tokenizer_source.find("generated"), std::string::npos);
}

}  // namespace
}  // namespace bitdelta
