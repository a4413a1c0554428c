// A compiled PCRE2 pattern (UTF + UCP, JIT) for pre-tokenizer splits. HF tokenizers uses Oniguruma;
// for the split patterns real tokenizers ship (GPT-2, Qwen2, Llama-3) PCRE2 gives the same matches.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bitdelta::tok {

class Regex {
 public:
  // Throws Error (naming the pattern and PCRE2's message) if the pattern does not compile.
  // `literal` treats the pattern as a plain string.
  explicit Regex(const std::string& pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends [begin, end) byte offsets (relative to `text`) of the successive non-overlapping
  // leftmost matches. Thread safe: match data comes from a per-thread pool.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// The pattern GPT-2's ByteLevel pre-tokenizer uses when use_regex is true.
inline constexpr const char* kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace bitdelta::tok
