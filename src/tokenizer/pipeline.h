// The text-processing stages of a tokenizer.json around the BPE model: normalizer, pre-tokenizer
// and decoder, restricted to the component types real BPE tokenizers (GPT-2, Qwen, Llama,
// Mistral) use. The loader refuses everything else, so each stage here is exact HF behaviour.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode_util.h"

namespace bitdelta::tok {

struct NormalizerStep {
  enum class Kind { kUnicode, kPrepend, kReplace };
  Kind kind = Kind::kUnicode;
  NormalForm form = NormalForm::kNfc;  // kUnicode
  std::string text;                    // kPrepend: the prefix; kReplace: the pattern
  std::string replacement;             // kReplace
};

class Normalizer {
 public:
  void add(NormalizerStep step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  // Returns the normalized text; `storage` holds it unless nothing changed, in which case the
  // returned view is `text` itself (the common case for ASCII under NFC, kept allocation-free).
  std::string_view apply(std::string_view text, std::string& storage) const;

 private:
  std::vector<NormalizerStep> steps_;
};

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  Kind kind = Kind::kSplit;
  std::shared_ptr<const Regex> regex;  // kSplit; kByteLevel with use_regex; kMetaspace with split
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool add_prefix_space = false;  // kByteLevel
  std::string replacement;        // kMetaspace, e.g. "▁"
  PrependScheme prepend_scheme = PrependScheme::kAlways;
};

// Pre-tokenized text: one buffer plus the word spans in it, so pure splitting never copies.
struct Pieces {
  std::string text;
  std::vector<std::pair<uint32_t, uint32_t>> spans;  // [begin, end) byte offsets into text
  std::string_view piece(size_t i) const {
    return std::string_view(text).substr(spans[i].first, spans[i].second - spans[i].first);
  }
};

class PreTokenizer {
 public:
  void add(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  bool has_byte_level() const;
  // Splits `text` (one normalized segment) into words. `at_text_start` says the segment begins at
  // offset 0 of the caller's text (Metaspace prepend_scheme "first").
  void split(std::string_view text, bool at_text_start, Pieces& out) const;

 private:
  std::vector<PreTokenizerStep> steps_;
};

struct DecoderStep {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kByteLevel;
  std::string pattern;      // kReplace
  std::string replacement;  // kReplace: the new text; kMetaspace: the marker, e.g. "▁"
  std::string strip_char;   // kStrip: one UTF-8 character
  int strip_start = 0;      // kStrip
  int strip_stop = 0;       // kStrip
  bool prepend = true;      // kMetaspace: drop the leading space of the first token
};

class Decoder {
 public:
  void add(DecoderStep step) { steps_.push_back(std::move(step)); }
  bool empty() const { return steps_.empty(); }
  // True for a plain ByteLevel decoder, which lets the tokenizer decode with per-id byte tables.
  bool is_byte_level_only() const {
    return steps_.size() == 1 && steps_[0].kind == DecoderStep::Kind::kByteLevel;
  }
  // Runs the decoder chain over the token strings and concatenates the result.
  std::string decode(std::vector<std::string> tokens) const;
  // What one token contributes on its own, as bytes: <0xNN> byte tokens give their byte and the
  // space marker becomes a space, but no whole-text step (Strip) is applied.
  std::string decode_piece(const std::string& token) const;
  // The characters the chain removes from the very start of the text (Strip start / Metaspace
  // prepend): how many of which character. Streaming decoders apply it once, at the start.
  std::pair<std::string, int> leading_strip() const;

 private:
  std::vector<DecoderStep> steps_;
};

}  // namespace bitdelta::tok
