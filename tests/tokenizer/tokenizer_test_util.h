// Shared by the tokenizer tests: the real tokenizers from shared assets, loaded once per process.
#pragma once

#include <string>
#include <vector>

#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta::testing {

inline const Tokenizer& qwen3_tokenizer() {
  static const Tokenizer t = Tokenizer::from_folder(shared_asset("tokenizers/qwen3"));
  return t;
}

inline const Tokenizer& gpt2_tokenizer() {
  static const Tokenizer t = Tokenizer::from_gpt2_files(shared_asset("tokenizers/gpt2/vocab.json"),
                                                        shared_asset("tokenizers/gpt2/merges.txt"));
  return t;
}

}  // namespace bitdelta::testing
