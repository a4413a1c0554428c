#include "tokenizer/tokenizer.h"

#include "tokenizer/tokenizer_impl.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;
using tok::TokenizerImpl;

namespace {

// Encodes one piece of text that contains no raw-matched added token.
class SegmentEncoder {
 public:
  SegmentEncoder(const TokenizerImpl& impl, bool parse_special, std::vector<int32_t>& out)
      : impl_(impl), parse_special_(parse_special), out_(out) {}

  void encode(std::string_view segment, bool at_text_start) {
    std::string_view normalized = impl_.normalizer.apply(segment, normalized_storage_);
    if (impl_.normalized_matcher.empty()) {
      encode_normalized(normalized, at_text_start);
      return;
    }
    // Added tokens with normalized: true are matched in the normalized text (HF's second pass).
    std::vector<tok::Segment> parts;
    impl_.normalized_matcher.split(normalized, !parse_special_, parts);
    for (const tok::Segment& part : parts) {
      if (part.id >= 0) {
        out_.push_back(part.id);
      } else {
        encode_normalized(normalized.substr(part.begin, part.end - part.begin),
                          at_text_start && part.begin == 0);
      }
    }
  }

 private:
  void encode_normalized(std::string_view text, bool at_text_start) {
    if (text.empty()) return;
    if (impl_.pre_tokenizer.empty()) {
      impl_.model->encode_word(text, out_);
      return;
    }
    impl_.pre_tokenizer.split(text, at_text_start, pieces_);
    for (size_t i = 0; i < pieces_.spans.size(); ++i)
      impl_.model->encode_word(pieces_.piece(i), out_);
  }

  const TokenizerImpl& impl_;
  bool parse_special_;
  std::vector<int32_t>& out_;
  std::string normalized_storage_;
  tok::Pieces pieces_;
};

void check_id(const TokenizerImpl& impl, int32_t id) {
  if (id < 0 || id >= impl.vocab_size) {
    fail("token id {} is out of range: the tokenizer ({}) has ids 0..{}", id, impl.source,
         impl.vocab_size - 1);
  }
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_json_text(std::string_view json, const std::string& source) {
  return Tokenizer(tok::parse_tokenizer_json(json, source));
}

Tokenizer Tokenizer::from_tokenizer_json(const fs::path& tokenizer_json) {
  return from_json_text(read_file(tokenizer_json), tokenizer_json.string());
}

Tokenizer Tokenizer::from_gpt2_files(const fs::path& vocab_json, const fs::path& merges_txt) {
  return Tokenizer(tok::load_gpt2_files(vocab_json, merges_txt));
}

Tokenizer Tokenizer::from_folder(const fs::path& dir) {
  std::shared_ptr<TokenizerImpl> impl;
  if (fs::exists(dir / "tokenizer.json")) {
    impl = tok::parse_tokenizer_json(read_file(dir / "tokenizer.json"),
                                     (dir / "tokenizer.json").string());
  } else if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) {
    impl = tok::load_gpt2_files(dir / "vocab.json", dir / "merges.txt");
  } else {
    fail("{}: no tokenizer found; expected tokenizer.json, or vocab.json with merges.txt",
         dir.string());
  }
  if (fs::exists(dir / "tokenizer_config.json")) {
    tok::apply_tokenizer_config(*impl, dir / "tokenizer_config.json");
  }
  // Newer HF exports keep the template in its own file; it wins over the config's copy.
  if (fs::exists(dir / "chat_template.jinja")) {
    impl->chat_template = read_file(dir / "chat_template.jinja");
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  const TokenizerImpl& impl = *impl_;
  std::string repaired;
  if (!tok::is_valid_utf8(text)) {
    repaired = tok::utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  SegmentEncoder encoder(impl, parse_special, out);
  if (impl.raw_matcher.empty()) {
    encoder.encode(text, true);
    return out;
  }
  std::vector<tok::Segment> segments;
  impl.raw_matcher.split(text, !parse_special, segments);
  for (const tok::Segment& s : segments) {
    if (s.id >= 0) {
      out.push_back(s.id);
    } else {
      encoder.encode(text.substr(s.begin, s.end - s.begin), s.begin == 0);
    }
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const TokenizerImpl& impl = *impl_;
  for (int32_t id : ids) check_id(impl, id);
  auto keep = [&](int32_t id) {
    return !(*impl.id_to_token)[size_t(id)].empty() &&
           !(skip_special && (*impl.special)[size_t(id)]);
  };
  if (impl.decoder.is_byte_level_only()) {
    std::string bytes;
    for (int32_t id : ids) {
      if (keep(id)) bytes += (*impl.id_to_bytes)[size_t(id)];
    }
    return tok::is_valid_utf8(bytes) ? bytes : tok::utf8_lossy(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (keep(id)) tokens.push_back((*impl.id_to_token)[size_t(id)]);
  }
  if (impl.decoder.empty()) {
    // HF joins tokens with spaces when a tokenizer has no decoder.
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  return impl.decoder.decode(std::move(tokens));
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_by_content->find(token); it != impl_->added_by_content->end()) {
    return it->second;
  }
  const auto& vocab = impl_->model->vocab();
  if (auto it = vocab.find(token); it != vocab.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::token_text(int32_t id) const {
  check_id(*impl_, id);
  return (*impl_->id_to_token)[size_t(id)];
}

std::string Tokenizer::token_bytes(int32_t id) const {
  check_id(*impl_, id);
  return (*impl_->id_to_bytes)[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && (*impl_->special)[size_t(id)] != 0;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos_id; }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->pad_id; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
std::string Tokenizer::summary_kind() const { return impl_->kind; }
size_t Tokenizer::num_merges() const { return impl_->model->num_merges(); }
size_t Tokenizer::num_added_tokens() const { return impl_->added_tokens.size(); }
const std::optional<std::string>& Tokenizer::chat_template_source() const {
  return impl_->chat_template;
}

TokenizerImpl& Tokenizer::mutable_impl() {
  if (impl_.use_count() > 1) impl_ = std::make_shared<TokenizerImpl>(*impl_);
  return *impl_;
}

void Tokenizer::set_bos_id(std::optional<int32_t> id) {
  if (id) check_id(*impl_, *id);
  mutable_impl().bos_id = id;
}
void Tokenizer::set_eos_id(std::optional<int32_t> id) {
  if (id) check_id(*impl_, *id);
  mutable_impl().eos_id = id;
}
void Tokenizer::set_pad_id(std::optional<int32_t> id) {
  if (id) check_id(*impl_, *id);
  mutable_impl().pad_id = id;
}
void Tokenizer::set_chat_template_source(std::optional<std::string> source) {
  mutable_impl().chat_template = std::move(source);
}

// Streaming works on bytes: each token's bytes are appended and the longest prefix of complete
// characters is released. That equals decode() because every supported decoder is, apart from a
// leading strip and U+FFFD repair, a concatenation of per-token bytes.
IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special,
                                       std::span<const int32_t> context)
    : tokenizer_(&tokenizer),
      skip_special_(skip_special),
      byte_level_(tokenizer.impl().decoder.is_byte_level_only()) {
  // The prompt's own text is not part of the output. Its special tokens (BOS and the like) are
  // not text a user wrote: after a BOS-only prompt the output starts a text of its own, as
  // decode(ids, skip_special) has it.
  for (int32_t id : context) {
    if (!tokenizer.is_special(id)) push(id);
  }
}

namespace {

// Moves the longest prefix of `pending` that can no longer change into the result. A trailing
// incomplete-but-valid sequence is held back. Invalid bytes become U+FFFD: per maximal subpart
// (byte-level decoders, like from_utf8_lossy) or per byte (ByteFallback).
std::string take_complete(std::string& pending, bool per_byte_replacement, bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending.size()) {
    if (uint8_t(pending[i]) < 0x80) {
      out.push_back(pending[i++]);
      continue;
    }
    bool incomplete;
    size_t n = tok::valid_utf8_prefix(std::string_view(pending).substr(i), incomplete);
    if (n > 0) {
      out.append(pending, i, n);
      i += n;
    } else if (incomplete && !final) {
      break;
    } else if (per_byte_replacement) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out += "\xEF\xBF\xBD";
      i += tok::invalid_utf8_subpart(std::string_view(pending).substr(i));
    }
  }
  pending.erase(0, i);
  return out;
}

}  // namespace

std::string IncrementalDecoder::push(int32_t id) {
  const TokenizerImpl& impl = tokenizer_->impl();
  check_id(impl, id);
  if ((*impl.id_to_token)[size_t(id)].empty()) return "";
  if (skip_special_ && (*impl.special)[size_t(id)]) return "";
  if (!byte_level_ && impl.decoder.empty() && emitted_any_) pending_bytes_ += ' ';
  pending_bytes_ += (*impl.id_to_bytes)[size_t(id)];
  if (!byte_level_ && !stripped_ && !pending_bytes_.empty()) {
    auto [c, count] = impl.decoder.leading_strip();
    for (int k = 0; k < count && !c.empty() && pending_bytes_.starts_with(c); ++k) {
      pending_bytes_.erase(0, c.size());
    }
    stripped_ = true;
  }
  emitted_any_ = true;
  return take_complete(pending_bytes_, !byte_level_, false);
}

std::string IncrementalDecoder::flush() {
  return take_complete(pending_bytes_, !byte_level_, true);
}

}  // namespace bitdelta
