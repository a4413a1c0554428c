// Import of llama2.c checkpoints (legacy fp32 `.bin` + `tokenizer.bin`) into an exactly
// equivalent Hugging Face Llama folder.
#pragma once

#include <filesystem>

#include "io/model_config.h"

namespace bitdelta {

struct Llama2cImportResult {
  ModelConfig config;
  int64_t parameters = 0;
  int64_t vocab_size = 0;
  size_t merges = 0;
};

// Writes config.json, generation_config.json, model.safetensors (F32), tokenizer.json and
// tokenizer_config.json into `out_dir` (created if needed; existing files are replaced
// atomically, one by one). Throws Error on malformed input; nothing is written until both inputs
// have been read and validated.
//
// llama2.c applies RoPE to interleaved pairs (2i, 2i+1) of each head; Hugging Face Llama rotates
// halves (i, i + head_dim/2). The q and k rows are therefore permuted per head, row 2i+j of the
// llama2.c head becoming row j*head_dim/2 + i of the HF head (the permutation of
// transformers' convert_llama_weights_to_hf). A shared classifier becomes tied embeddings.
Llama2cImportResult import_llama2c(const std::filesystem::path& model_bin,
                                   const std::filesystem::path& tokenizer_bin,
                                   const std::filesystem::path& out_dir);

// llama2.c tokenizer.bin: max_token_length, then per token: f32 score, i32 length, bytes.
struct Llama2cVocab {
  std::vector<std::string> pieces;  // as stored (spaces, not ▁)
  std::vector<float> scores;
};
Llama2cVocab read_llama2c_tokenizer(const std::filesystem::path& tokenizer_bin,
                                    int64_t vocab_size);

}  // namespace bitdelta
