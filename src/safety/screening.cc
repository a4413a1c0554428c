#include "safety/screening.h"

#include <fmt/format.h>

#include <set>

#include "tokenizer/regex.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

extern const char* const kBuiltinScreenPatterns;  // builtin_data.cc, from data/safety/

ScreenPatterns::ScreenPatterns(ScreenPatterns&&) noexcept = default;
ScreenPatterns& ScreenPatterns::operator=(ScreenPatterns&&) noexcept = default;
ScreenPatterns::~ScreenPatterns() = default;

ScreenPatterns ScreenPatterns::parse(std::string_view text, const std::string& source) {
  ScreenPatterns p;
  p.source_ = source;
  p.sha256_ = sha256_hex({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: not JSON ({}); a screening list is {{\"version\": 1, \"patterns\": [...]}}", source,
         e.what());
  }
  if (!j.is_object() || !j.contains("patterns") || !j["patterns"].is_array()) {
    fail("{}: a screening list is an object with a \"patterns\" array (docs/safety.md)", source);
  }
  if (j.value("version", 0) != 1) {
    fail("{}: \"version\" must be 1 (the only screening-list format there is)", source);
  }
  for (const auto& [key, value] : j.items()) {
    if (key != "version" && key != "patterns" && key != "description") {
      fail("{}: unknown field \"{}\"", source, key);
    }
  }
  std::set<std::string> ids;
  const json& list = j["patterns"];
  for (size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    const std::string where = fmt::format("{}: patterns[{}]", source, i);
    if (!e.is_object()) fail("{} must be an object", where);
    ScreenPattern sp;
    for (const auto& [key, value] : e.items()) {
      std::string* field = key == "id"            ? &sp.id
                           : key == "kind"        ? &sp.kind
                           : key == "description" ? &sp.description
                           : key == "pattern"     ? &sp.pattern
                                                  : nullptr;
      if (field == nullptr) {
        fail("{}: unknown field \"{}\"; a pattern has id, kind, description and pattern", where,
             key);
      }
      if (!value.is_string()) fail("{}: \"{}\" must be a string", where, key);
      *field = value.get<std::string>();
    }
    if (sp.id.empty() || sp.pattern.empty() || sp.kind.empty()) {
      fail("{}: \"id\", \"kind\" and \"pattern\" are required", where);
    }
    if (!ids.insert(sp.id).second) fail("{}: id \"{}\" appears twice", where, sp.id);
    try {
      p.compiled_.push_back(std::make_unique<tok::Regex>("(?i)" + sp.pattern));
    } catch (const Error& err) {
      fail("{} (\"{}\"): the pattern does not compile: {}", where, sp.id, err.what());
    }
    p.patterns_.push_back(std::move(sp));
  }
  if (p.patterns_.empty()) fail("{}: no patterns", source);
  return p;
}

ScreenPatterns ScreenPatterns::load(const fs::path& path) {
  if (!fs::is_regular_file(path)) {
    fail("screening list {} not found; give a JSON file as docs/safety.md describes",
         path.string());
  }
  return parse(read_file(path), path.string());
}

ScreenPatterns ScreenPatterns::builtin() {
  return parse(kBuiltinScreenPatterns, "builtin:screen-v1");
}

std::optional<ScreenPatterns::Match> ScreenPatterns::match(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> found;
  for (size_t i = 0; i < compiled_.size(); ++i) {
    found.clear();
    compiled_[i]->find_all(text, found);
    if (!found.empty()) return Match{i, found.front().first, found.front().second};
  }
  return std::nullopt;
}

namespace {

// The first match among the strings of `value` (depth first, in document order), with its path.
std::optional<std::pair<ScreenPatterns::Match, std::string>> first_match(
    const json& value, const ScreenPatterns& patterns, const std::string& path,
    const std::string** text) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (auto m = patterns.match(s)) {
      *text = &s;
      return std::pair{*m, path};
    }
  } else if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      if (auto m = first_match(child, patterns, path.empty() ? key : path + "." + key, text))
        return m;
    }
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      if (auto m = first_match(value[i], patterns, fmt::format("{}[{}]", path, i), text)) return m;
    }
  }
  return std::nullopt;
}

// The match with up to 40 bytes either side, cut at UTF-8 character boundaries.
std::string excerpt(const std::string& s, size_t begin, size_t end) {
  auto is_continuation = [&](size_t i) {
    return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80;
  };
  size_t a = begin > 40 ? begin - 40 : 0, b = std::min(s.size(), end + 40);
  while (a > 0 && is_continuation(a)) --a;
  while (b < s.size() && is_continuation(b)) ++b;
  std::string out = (a > 0 ? "…" : "") + s.substr(a, b - a) + (b < s.size() ? "…" : "");
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return out;
}

}  // namespace

ScreenReport screen_records(const fs::path& records, const ScreenPatterns& patterns,
                            const std::optional<fs::path>& out) {
  ScreenReport report;
  report.patterns_source = patterns.source();
  report.patterns_sha256 = patterns.sha256();
  const std::string text = read_file(records);
  std::string kept;
  kept.reserve(text.size());
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    const std::string_view line(text.data() + pos, end - pos);
    ++line_no;
    bool flagged = false;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      ++report.records;
      const std::string* matched_text = nullptr;
      if (auto m = first_match(j, patterns, "", &matched_text)) {
        const ScreenPattern& p = patterns.patterns()[m->first.pattern];
        report.findings.push_back({line_no, p.id, p.kind, m->second,
                                   excerpt(*matched_text, m->first.begin, m->first.end)});
        flagged = true;
      }
    }
    if (!flagged) kept.append(line);
    if (nl != std::string::npos) kept.push_back('\n');
    pos = end + 1;
  }
  if (out) write_file_atomic(*out, kept);
  return report;
}

nlohmann::ordered_json ScreenReport::to_json() const {
  nlohmann::ordered_json j = {
      {"patterns", {{"source", patterns_source}, {"sha256", patterns_sha256}}},
      {"records", records},
      {"flagged", findings.size()},
      {"findings", nlohmann::ordered_json::array()}};
  for (const ScreenFinding& f : findings) {
    j["findings"].push_back({{"line", f.line},
                             {"pattern", f.pattern_id},
                             {"kind", f.kind},
                             {"field", f.field},
                             {"excerpt", f.excerpt}});
  }
  return j;
}

}  // namespace bitdelta
