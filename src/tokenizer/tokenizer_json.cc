// Loading: tokenizer.json (HF `tokenizers` format), GPT-2 vocab.json + merges.txt, and the
// special-token / chat-template fields of tokenizer_config.json. Every unsupported component is
// refused here, naming the feature and the file.
#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "tokenizer/tokenizer_impl.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta::tok {

namespace {

using nlohmann::json;

// Field access that turns a wrong JSON type into an Error naming the field, instead of
// nlohmann's type_error (which would not say which file).
struct Reader {
  const std::string& source;

  std::string str(const json& obj, const char* key, const std::string& fallback = "") const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_string())
      fail("{}: field \"{}\" must be a string, got {}", source, key, it->dump());
    return it->get<std::string>();
  }
  bool boolean(const json& obj, const char* key, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail("{}: field \"{}\" must be true or false", source, key);
    return it->get<bool>();
  }
  int64_t integer(const json& obj, const char* key, int64_t fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number_integer()) fail("{}: field \"{}\" must be an integer", source, key);
    return it->get<int64_t>();
  }
  const json& array(const json& obj, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_array()) {
      fail("{}: field \"{}\" is missing or not a list", source, key);
    }
    return *it;
  }
  std::string type_of(const json& component, const char* what) const {
    if (!component.is_object()) fail("{}: the {} must be an object or null", source, what);
    std::string type = str(component, "type");
    if (type.empty()) fail("{}: the {} has no \"type\"", source, what);
    return type;
  }
  [[noreturn]] void unsupported(const char* what, const std::string& type,
                                const char* supported) const {
    fail(
        "{}: {} type \"{}\" is not supported (supported: {}); this engine implements BPE "
        "tokenizers of the GPT-2 / Qwen / Llama / Mistral kind",
        source, what, type, supported);
  }
};

// `{"Regex": "..."}` or `{"String": "..."}` -> compiled pattern.
std::shared_ptr<const Regex> parse_pattern(const Reader& r, const json& pattern, const char* what) {
  if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
    try {
      return std::make_shared<Regex>(pattern["Regex"].get<std::string>());
    } catch (const Error& e) {
      fail("{}: {}", r.source, e.what());
    }
  }
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
    return std::make_shared<Regex>(pattern["String"].get<std::string>(), /*literal=*/true);
  }
  fail("{}: the {} pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}, got {}", r.source,
       what, pattern.dump());
}

std::string string_pattern(const Reader& r, const json& pattern, const char* what) {
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
    return pattern["String"].get<std::string>();
  }
  fail("{}: only {{\"String\": ...}} patterns are supported in the {} (got {})", r.source, what,
       pattern.dump());
}

void parse_normalizer(const Reader& r, const json& n, Normalizer& out) {
  if (n.is_null()) return;
  std::string type = r.type_of(n, "normalizer");
  if (type == "Sequence") {
    for (const json& child : r.array(n, "normalizers")) parse_normalizer(r, child, out);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    NormalizerStep step;
    step.form = type == "NFC"    ? NormalForm::kNfc
                : type == "NFD"  ? NormalForm::kNfd
                : type == "NFKC" ? NormalForm::kNfkc
                                 : NormalForm::kNfkd;
    out.add(step);
  } else if (type == "Prepend") {
    out.add({NormalizerStep::Kind::kPrepend, NormalForm::kNfc, r.str(n, "prepend"), ""});
  } else if (type == "Replace") {
    std::string pattern = string_pattern(r, n.value("pattern", json()), "Replace normalizer");
    out.add({NormalizerStep::Kind::kReplace, NormalForm::kNfc, pattern, r.str(n, "content")});
  } else {
    r.unsupported("normalizer", type, "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence");
  }
}

PrependScheme parse_prepend_scheme(const Reader& r, const json& m) {
  if (m.contains("prepend_scheme") && !m["prepend_scheme"].is_null()) {
    std::string s = r.str(m, "prepend_scheme");
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    fail("{}: Metaspace prepend_scheme \"{}\" is not one of always, first, never", r.source, s);
  }
  // Files from before prepend_scheme existed say add_prefix_space instead.
  return r.boolean(m, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

void parse_pre_tokenizer(const Reader& r, const json& p, PreTokenizer& out) {
  if (p.is_null()) return;
  std::string type = r.type_of(p, "pre_tokenizer");
  if (type == "Sequence") {
    for (const json& child : r.array(p, "pretokenizers")) parse_pre_tokenizer(r, child, out);
  } else if (type == "Split") {
    PreTokenizerStep step;
    step.kind = PreTokenizerStep::Kind::kSplit;
    step.regex = parse_pattern(r, p.value("pattern", json()), "Split pre-tokenizer");
    std::string behavior = r.str(p, "behavior", "Isolated");
    if (behavior == "Isolated") {
      step.behavior = SplitBehavior::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = SplitBehavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = SplitBehavior::kMergedWithNext;
    } else {
      fail(
          "{}: Split pre-tokenizer behavior \"{}\" is not supported (supported: Isolated, "
          "Removed, MergedWithPrevious, MergedWithNext)",
          r.source, behavior);
    }
    if (r.boolean(p, "invert", false)) {
      fail("{}: Split pre-tokenizer with invert: true is not supported", r.source);
    }
    out.add(std::move(step));
  } else if (type == "ByteLevel") {
    PreTokenizerStep step;
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = r.boolean(p, "add_prefix_space", true);
    if (r.boolean(p, "use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2SplitPattern);
    out.add(std::move(step));
  } else if (type == "Metaspace") {
    PreTokenizerStep step;
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    step.replacement = r.str(p, "replacement", "\xE2\x96\x81");
    step.prepend_scheme = parse_prepend_scheme(r, p);
    if (r.boolean(p, "split", true)) {
      step.regex = std::make_shared<Regex>(step.replacement, /*literal=*/true);
    }
    out.add(std::move(step));
  } else {
    r.unsupported("pre_tokenizer", type, "ByteLevel, Split, Metaspace, Sequence");
  }
}

void parse_decoder(const Reader& r, const json& d, Decoder& out) {
  if (d.is_null()) return;
  std::string type = r.type_of(d, "decoder");
  DecoderStep step;
  if (type == "Sequence") {
    for (const json& child : r.array(d, "decoders")) parse_decoder(r, child, out);
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::kByteLevel;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::kReplace;
    step.pattern = string_pattern(r, d.value("pattern", json()), "Replace decoder");
    step.replacement = r.str(d, "content");
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::kStrip;
    step.strip_char = r.str(d, "content", " ");
    step.strip_start = int(r.integer(d, "start", 0));
    step.strip_stop = int(r.integer(d, "stop", 0));
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::kMetaspace;
    step.replacement = r.str(d, "replacement", "\xE2\x96\x81");
    step.prepend = parse_prepend_scheme(r, d) != PrependScheme::kNever;
  } else {
    r.unsupported("decoder", type,
                  "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
  }
  out.add(std::move(step));
}

// model.vocab and model.merges hold ~150k entries each in real files; building them as a JSON DOM
// (std::map nodes) dominated load time, so they are streamed out with a SAX pass instead.
struct BigSections : nlohmann::json_sax<json> {
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false;
  bool has_merges = false;
  std::string error;  // first problem found, for the caller to report with the file name

  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override { return integer(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return integer(v > number_unsigned_t(INT64_MAX) ? -1 : int64_t(v));
  }
  bool number_float(number_float_t, const string_t&) override { return scalar("a fraction"); }
  bool binary(binary_t&) override { return scalar("binary"); }
  bool string(string_t& v) override {
    if (where_ == kMerges && depth_ == 3) {
      size_t space = v.find(' ');
      if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) {
        return problem(fmt::format("merge #{} \"{}\" is not two tokens separated by one space",
                                   merges.size(), v));
      }
      merges.emplace_back(v.substr(0, space), v.substr(space + 1));
      return true;
    }
    if (where_ == kMerges && depth_ == 4) {
      pair_.push_back(std::move(v));
      return true;
    }
    return scalar("a string");
  }
  bool start_object(std::size_t) override {
    ++depth_;
    if (depth_ == 3 && in_model("vocab")) {
      where_ = kVocab;
      has_vocab = true;
    } else if (where_ != kOther && depth_ > 3) {
      return problem(where_ == kVocab ? "a model.vocab entry must map to an integer id"
                                      : "a merge must be \"a b\" or [\"a\", \"b\"]");
    }
    return true;
  }
  bool end_object() override {
    if (depth_ == 3 && where_ == kVocab) where_ = kOther;
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    if (depth_ == 3 && in_model("merges")) {
      where_ = kMerges;
      has_merges = true;
    } else if (where_ == kMerges && depth_ == 4) {
      pair_.clear();
    } else if (where_ != kOther) {
      return problem(where_ == kVocab ? "a model.vocab entry must map to an integer id"
                                      : "a merge must be \"a b\" or [\"a\", \"b\"]");
    }
    return true;
  }
  bool end_array() override {
    if (where_ == kMerges && depth_ == 4) {
      if (pair_.size() != 2) {
        return problem(fmt::format("merge #{} must be a pair of two tokens", merges.size()));
      }
      merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
    } else if (where_ == kMerges && depth_ == 3) {
      where_ = kOther;
    }
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ == 1) top_key_ = k;
    if (depth_ == 2) model_key_ = k;
    if (depth_ == 3 && where_ == kVocab) vocab_key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;  // the DOM pass already reported malformed JSON
  }

 private:
  enum Where { kOther, kVocab, kMerges };
  bool in_model(const char* key) const { return top_key_ == "model" && model_key_ == key; }
  bool problem(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }
  bool scalar(const char* what) {
    if (where_ == kVocab && depth_ == 3) {
      return problem(fmt::format("model.vocab entry \"{}\" must map to an integer id, not {}",
                                 vocab_key_, what));
    }
    if (where_ == kMerges) {
      return problem(
          fmt::format("merge #{} must be \"a b\" or [\"a\", \"b\"], not {}", merges.size(), what));
    }
    return true;
  }
  bool integer(int64_t v) {
    if (where_ == kVocab && depth_ == 3) {
      if (v < 0 || v > INT32_MAX) {
        return problem(fmt::format("model.vocab entry \"{}\" has invalid id {}", vocab_key_, v));
      }
      vocab.emplace_back(std::move(vocab_key_), v);
      return true;
    }
    return scalar("a number");
  }

  int depth_ = 0;
  Where where_ = kOther;
  std::string top_key_, model_key_, vocab_key_;
  std::vector<std::string> pair_;
};

// Checks ids for uniqueness and builds the token map.
TokenMap build_vocab(const Reader& r, std::vector<std::pair<std::string, int64_t>> entries) {
  TokenMap map;
  map.reserve(entries.size());
  std::vector<int32_t> ids;
  ids.reserve(entries.size());
  for (auto& [token, id] : entries) {
    ids.push_back(int32_t(id));
    map.emplace(std::move(token), int32_t(id));
  }
  std::sort(ids.begin(), ids.end());
  if (auto dup = std::adjacent_find(ids.begin(), ids.end()); dup != ids.end()) {
    std::vector<std::string> names;
    for (const auto& [token, id] : map) {
      if (id == *dup) names.push_back("\"" + token + "\"");
    }
    fail("{}: model.vocab gives id {} to more than one token ({}); ids must be unique", r.source,
         *dup, fmt::join(names, ", "));
  }
  return map;
}

// model.vocab: token -> id, with ids checked for sign and uniqueness.
TokenMap parse_vocab(const Reader& r, const json& vocab) {
  if (!vocab.is_object()) fail("{}: model.vocab is missing or not an object", r.source);
  std::vector<std::pair<std::string, int64_t>> entries;
  entries.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      fail("{}: model.vocab entry \"{}\" must map to an integer id", r.source, it.key());
    }
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX) {
      fail("{}: model.vocab entry \"{}\" has invalid id {}", r.source, it.key(), id);
    }
    entries.emplace_back(it.key(), id);
  }
  return build_vocab(r, std::move(entries));
}

std::shared_ptr<const BpeModel> parse_model(const Reader& r, const json& model,
                                            BigSections& sections, bool byte_level) {
  if (!model.is_object()) fail("{}: the \"model\" section is missing", r.source);
  std::string type = r.str(model, "type", "BPE");
  if (type != "BPE") r.unsupported("model", type, "BPE");
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    fail("{}: BPE dropout is not supported (it makes encoding random); set model.dropout to null",
         r.source);
  }
  if (!r.str(model, "continuing_subword_prefix").empty() ||
      !r.str(model, "end_of_word_suffix").empty()) {
    fail("{}: BPE continuing_subword_prefix / end_of_word_suffix are not supported", r.source);
  }
  BpeOptions options;
  options.byte_level_input = byte_level;
  options.byte_fallback = r.boolean(model, "byte_fallback", false);
  options.fuse_unk = r.boolean(model, "fuse_unk", false);
  options.ignore_merges = r.boolean(model, "ignore_merges", false);
  std::string unk = r.str(model, "unk_token");
  if (!unk.empty()) options.unk_token = unk;
  if (!sections.has_vocab) fail("{}: model.vocab is missing or not an object", r.source);
  auto vocab = build_vocab(r, std::move(sections.vocab));
  std::vector<std::pair<std::string_view, std::string_view>> merges;
  merges.reserve(sections.merges.size());
  for (const auto& [a, b] : sections.merges) merges.emplace_back(a, b);
  return std::make_shared<BpeModel>(std::move(vocab), merges, options, r.source);
}

std::vector<AddedToken> parse_added_tokens(const Reader& r, const json& j) {
  std::vector<AddedToken> out;
  auto it = j.find("added_tokens");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) fail("{}: \"added_tokens\" must be a list", r.source);
  for (const json& a : *it) {
    if (!a.is_object()) fail("{}: each added token must be an object", r.source);
    AddedToken t;
    int64_t id = r.integer(a, "id", -1);
    if (id < 0 || id > INT32_MAX) fail("{}: added token {} has no valid id", r.source, a.dump());
    t.id = int32_t(id);
    t.content = r.str(a, "content");
    if (t.content.empty()) fail("{}: added token {} has empty content", r.source, id);
    t.special = r.boolean(a, "special", false);
    t.normalized = r.boolean(a, "normalized", !t.special);
    t.lstrip = r.boolean(a, "lstrip", false);
    t.rstrip = r.boolean(a, "rstrip", false);
    t.single_word = r.boolean(a, "single_word", false);
    out.push_back(std::move(t));
  }
  return out;
}

// Builds the id tables and matchers once the components are known.
void finish_tokenizer(TokenizerImpl& impl) {
  const TokenMap& vocab = impl.model->vocab();
  int32_t max_id = impl.model->max_id();
  for (const AddedToken& t : impl.added_tokens) max_id = std::max(max_id, t.id);
  impl.vocab_size = max_id + 1;

  auto id_to_token = std::make_shared<std::vector<std::string>>(size_t(impl.vocab_size));
  auto special = std::make_shared<std::vector<uint8_t>>(size_t(impl.vocab_size), 0);
  auto added_by_content = std::make_shared<TokenMap>();
  for (const auto& [token, id] : vocab) (*id_to_token)[size_t(id)] = token;
  std::vector<AddedToken> raw, normalized;
  std::vector<std::string> raw_patterns, normalized_patterns;
  for (const AddedToken& t : impl.added_tokens) {
    (*id_to_token)[size_t(t.id)] = t.content;
    (*special)[size_t(t.id)] = t.special ? 1 : 0;
    added_by_content->emplace(t.content, t.id);
    if (t.normalized && !impl.normalizer.empty()) {
      std::string storage;
      normalized_patterns.emplace_back(impl.normalizer.apply(t.content, storage));
      normalized.push_back(t);
    } else {
      raw_patterns.push_back(t.content);
      raw.push_back(t);
    }
  }
  impl.raw_matcher = AddedTokenMatcher(std::move(raw), std::move(raw_patterns));
  impl.normalized_matcher =
      AddedTokenMatcher(std::move(normalized), std::move(normalized_patterns));

  auto id_to_bytes = std::make_shared<std::vector<std::string>>(size_t(impl.vocab_size));
  if (impl.decoder.is_byte_level_only()) {
    for (size_t id = 0; id < id_to_token->size(); ++id) {
      const std::string& t = (*id_to_token)[id];
      std::string& b = (*id_to_bytes)[id];
      if (!byte_level_decode(t, b)) b = t;
    }
  } else {
    for (size_t id = 0; id < id_to_token->size(); ++id) {
      (*id_to_bytes)[id] = impl.decoder.decode_piece((*id_to_token)[id]);
    }
  }
  impl.id_to_token = std::move(id_to_token);
  impl.id_to_bytes = std::move(id_to_bytes);
  impl.special = std::move(special);
  impl.added_by_content = std::move(added_by_content);

  const BpeOptions& o = impl.model->options();
  if (o.byte_level_input) {
    impl.kind = "byte-level BPE";
  } else if (o.byte_fallback) {
    impl.kind = "sentencepiece BPE (byte fallback)";
  } else if (vocab.count("\xE2\x96\x81") != 0) {
    impl.kind = "sentencepiece BPE";
  } else {
    impl.kind = "BPE";
  }
}

}  // namespace

std::shared_ptr<TokenizerImpl> parse_tokenizer_json(std::string_view text,
                                                    const std::string& source) {
  json j;
  std::string top_key;
  // The DOM skips model.vocab and model.merges; BigSections streams them (see there).
  auto skip_big = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event != json::parse_event_t::key) return true;
    if (depth == 1) top_key = parsed.get<std::string>();
    return !(depth == 2 && top_key == "model" && (parsed == "vocab" || parsed == "merges"));
  };
  try {
    j = json::parse(text.begin(), text.end(), skip_big);
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({}); the file is corrupt or truncated, fetch it again", source,
         e.what());
  }
  BigSections sections;
  if (j.is_object()) {
    json::sax_parse(text.begin(), text.end(), &sections);
    if (!sections.error.empty()) fail("{}: {}", source, sections.error);
  }
  if (!j.is_object()) fail("{}: expected a JSON object at the top level", source);
  Reader r{source};
  auto impl = std::make_shared<TokenizerImpl>();
  impl->source = source;
  if (!j.contains("model"))
    fail("{}: the \"model\" section is missing; not a tokenizer.json?", source);
  static const json kNull;
  auto section = [&](const char* key) -> const json& {
    auto it = j.find(key);
    return it == j.end() ? kNull : *it;
  };
  parse_normalizer(r, section("normalizer"), impl->normalizer);
  parse_pre_tokenizer(r, section("pre_tokenizer"), impl->pre_tokenizer);
  parse_decoder(r, section("decoder"), impl->decoder);
  impl->model = parse_model(r, j["model"], sections, impl->pre_tokenizer.has_byte_level());
  impl->added_tokens = parse_added_tokens(r, j);
  finish_tokenizer(*impl);
  return impl;
}

std::shared_ptr<TokenizerImpl> load_gpt2_files(const std::filesystem::path& vocab_json,
                                               const std::filesystem::path& merges_txt) {
  std::string source = vocab_json.string();
  Reader r{source};
  json vocab_j;
  std::string vocab_text = read_file(vocab_json);
  try {
    vocab_j = json::parse(vocab_text);
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({}); the file is corrupt or truncated", source, e.what());
  }
  TokenMap vocab = parse_vocab(r, vocab_j);

  std::string merges_text = read_file(merges_txt);
  std::vector<std::pair<std::string_view, std::string_view>> merges;
  size_t pos = 0, line_no = 0;
  while (pos < merges_text.size()) {
    size_t eol = merges_text.find('\n', pos);
    if (eol == std::string::npos) eol = merges_text.size();
    std::string_view line(merges_text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      fail("{}:{}: expected two tokens separated by one space, got \"{}\"", merges_txt.string(),
           line_no, line);
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }

  auto impl = std::make_shared<TokenizerImpl>();
  impl->source = source;
  PreTokenizerStep byte_level;
  byte_level.kind = PreTokenizerStep::Kind::kByteLevel;
  byte_level.regex = std::make_shared<Regex>(kGpt2SplitPattern);
  impl->pre_tokenizer.add(std::move(byte_level));
  impl->decoder.add(DecoderStep{});
  BpeOptions options;
  options.byte_level_input = true;
  // GPT2TokenizerFast registers <|endoftext|> as its one special token (bos = eos = unk).
  auto eot = vocab.find("<|endoftext|>");
  if (eot != vocab.end()) {
    AddedToken t;
    t.id = eot->second;
    t.content = eot->first;
    t.special = true;
    impl->added_tokens.push_back(t);
    impl->bos_id = impl->eos_id = t.id;
  }
  impl->model = std::make_shared<BpeModel>(std::move(vocab), merges, options, merges_txt.string());
  finish_tokenizer(*impl);
  return impl;
}

void apply_tokenizer_config(TokenizerImpl& impl, const std::filesystem::path& config_json) {
  std::string source = config_json.string();
  json j;
  try {
    j = json::parse(read_file(config_json));
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({}); fix or delete the file", source, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object at the top level", source);
  Reader r{source};
  impl.add_bos = r.boolean(j, "add_bos_token", false);
  auto token_of = [&](const char* key) -> std::optional<int32_t> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    std::string content;
    if (it->is_string()) {
      content = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      content = (*it)["content"].get<std::string>();
    } else {
      fail("{}: \"{}\" must be a token string or an object with \"content\"", source, key);
    }
    if (auto a = impl.added_by_content->find(content); a != impl.added_by_content->end()) {
      return a->second;
    }
    if (auto v = impl.model->vocab().find(content); v != impl.model->vocab().end()) {
      return v->second;
    }
    // Configs sometimes name tokens the vocab lacks (e.g. a pad token never used); leave unset.
    return std::nullopt;
  };
  if (auto id = token_of("bos_token")) impl.bos_id = id;
  if (auto id = token_of("eos_token")) impl.eos_id = id;
  if (auto id = token_of("pad_token")) impl.pad_id = id;

  auto ct = j.find("chat_template");
  if (ct != j.end() && !ct->is_null()) {
    if (ct->is_string()) {
      impl.chat_template = ct->get<std::string>();
    } else if (ct->is_array()) {
      // Named templates: [{"name": "default", "template": ...}, {"name": "tool_use", ...}].
      for (const json& entry : *ct) {
        if (entry.is_object() && entry.value("name", "") == "default" &&
            entry.contains("template") && entry["template"].is_string()) {
          impl.chat_template = entry["template"].get<std::string>();
        }
      }
      if (!impl.chat_template) fail("{}: chat_template list has no \"default\" entry", source);
    } else {
      fail("{}: chat_template must be a string or a list of named templates", source);
    }
  }
}

}  // namespace bitdelta::tok
