// A Hugging Face model folder as a GGUF file (version 3) that llama.cpp loads: the same weights,
// llama.cpp's tensor names and metadata for the llama (and Mistral), qwen2 and qwen3
// architectures, and the tokenizer's vocabulary. Used to benchmark against llama.cpp on exactly
// our weights (issue 14) and by `bitdelta export-gguf` for people who run llama.cpp.
//
// What is written, following llama.cpp's own converter (convert_hf_to_gguf.py):
//   - tensors: token_embd, output_norm, output (untied only), blk.N.{attn_norm, attn_q, attn_k,
//     attn_v, attn_output, attn_q_norm, attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down} (+ the
//     q/k/v biases of qwen2); dimensions reversed (GGUF's first dimension is the innermost);
//     matrices keep their dtype (BF16, F16 or F32), vectors are written as F32; llama's q and k
//     rows are permuted from Hugging Face's rotate-half order to llama.cpp's interleaved RoPE;
//   - metadata: general.*, {arch}.context_length / embedding_length / block_count /
//     feed_forward_length / attention.head_count / head_count_kv / key_length / value_length /
//     layer_norm_rms_epsilon / rope.freq_base, and the vocabulary: byte-level BPE tokenizers as
//     "gpt2" (tokens, token types, merges, the pre-tokenizer name), byte-fallback BPE tokenizers
//     (sentencepiece-style, e.g. llama2.c's) as "llama" (tokens, scores from the merge order,
//     token types), with the BOS/EOS/padding ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace bitdelta {

struct GgufExportResult {
  std::string architecture;     // "llama", "qwen2", "qwen3"
  std::string tokenizer_model;  // "gpt2" or "llama"
  int64_t tensors = 0, metadata = 0, vocab = 0;
  uint64_t bytes = 0;
};

// Writes `out` atomically. Error for a folder that is not a supported model, a tokenizer the
// export cannot describe, or an unwritable output.
GgufExportResult export_gguf(const std::filesystem::path& model_dir,
                             const std::filesystem::path& out);

}  // namespace bitdelta
