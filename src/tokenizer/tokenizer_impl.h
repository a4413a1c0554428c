// Internal state of a loaded Tokenizer, shared by the loader (tokenizer_json.cc), the encoder and
// decoder (tokenizer.cc) and the chat templates. Not part of the public API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/pipeline.h"

namespace bitdelta::tok {

struct TokenizerImpl {
  std::string source;  // file name for messages
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  Decoder decoder;
  std::shared_ptr<const BpeModel> model;

  std::vector<AddedToken> added_tokens;
  AddedTokenMatcher raw_matcher;         // normalized == false: matched in the raw text
  AddedTokenMatcher normalized_matcher;  // normalized == true: matched after normalization

  // Indexed by id (size vocab_size): the token string ("" for gaps), whether it is a special added
  // token, and its decoded bytes (byte-level tokens mapped back to bytes).
  std::shared_ptr<const std::vector<std::string>> id_to_token;
  std::shared_ptr<const std::vector<std::string>> id_to_bytes;
  std::shared_ptr<const std::vector<uint8_t>> special;
  std::shared_ptr<const TokenMap> added_by_content;
  int32_t vocab_size = 0;

  std::optional<int32_t> bos_id, eos_id, pad_id;
  bool add_bos = false;
  std::optional<std::string> chat_template;
  std::string kind;
};

// tokenizer_json.cc
std::shared_ptr<TokenizerImpl> parse_tokenizer_json(std::string_view json,
                                                    const std::string& source);
std::shared_ptr<TokenizerImpl> load_gpt2_files(const std::filesystem::path& vocab_json,
                                               const std::filesystem::path& merges_txt);
// Reads bos/eos/pad/add_bos/chat_template from a tokenizer_config.json.
void apply_tokenizer_config(TokenizerImpl& impl, const std::filesystem::path& config_json);

}  // namespace bitdelta::tok
