// Training-data screening (docs/safety.md): before a user's records are fine-tuned on, every
// string in every record is matched against a list of jailbreak and prompt-injection patterns;
// flagged records are reported with their line numbers and left out of training.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bitdelta {

namespace tok {
class Regex;
}

struct ScreenPattern {
  std::string id, kind, description, pattern;
};

// A screening list: {"version": 1, "patterns": [{"id", "kind", "description", "pattern"}]}
// (PCRE2 syntax, matched case-insensitively), with where it came from and its SHA-256.
class ScreenPatterns {
 public:
  // Error naming the source and the pattern: not JSON, missing fields, a duplicate id, a pattern
  // that does not compile (with PCRE2's message), no patterns.
  static ScreenPatterns parse(std::string_view text, const std::string& source);
  static ScreenPatterns load(const std::filesystem::path& path);
  static ScreenPatterns builtin();  // data/safety/screen_patterns.json, compiled in

  ScreenPatterns(ScreenPatterns&&) noexcept;
  ScreenPatterns& operator=(ScreenPatterns&&) noexcept;
  ~ScreenPatterns();

  const std::string& source() const { return source_; }
  const std::string& sha256() const { return sha256_; }
  const std::vector<ScreenPattern>& patterns() const { return patterns_; }
  // The first pattern that matches `text` (index into patterns()) and where; nullopt if none.
  struct Match {
    size_t pattern = 0;
    size_t begin = 0, end = 0;
  };
  std::optional<Match> match(std::string_view text) const;

 private:
  ScreenPatterns() = default;
  std::string source_, sha256_;
  std::vector<ScreenPattern> patterns_;
  std::vector<std::unique_ptr<tok::Regex>> compiled_;
};

struct ScreenFinding {
  int64_t line = 0;
  std::string pattern_id, kind;
  std::string field;    // where in the record: "messages[1].content"
  std::string excerpt;  // the matched text with a little context, at most ~120 bytes
};

struct ScreenReport {
  std::string patterns_source, patterns_sha256;
  int64_t records = 0;                  // JSON object lines screened
  std::vector<ScreenFinding> findings;  // one per flagged record (its first match), by line
  nlohmann::ordered_json to_json() const;
};

// Screens the records of a JSONL file (lines that are not JSON objects are left to the record
// validator). With `out`, writes the same file with every flagged line emptied, so the lines
// that stay keep their numbers (atomically).
ScreenReport screen_records(const std::filesystem::path& records, const ScreenPatterns& patterns,
                            const std::optional<std::filesystem::path>& out);

}  // namespace bitdelta
