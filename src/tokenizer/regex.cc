#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "tokenizer/unicode_util.h"
#include "util/error.h"

namespace bitdelta::tok {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// One match-data block per thread, grown on demand: allocating it per call would cost more than
// a typical word match.
pcre2_match_data* thread_match_data() {
  struct Holder {
    pcre2_match_data* data = nullptr;
    ~Holder() { pcre2_match_data_free(data); }
  };
  thread_local Holder holder;
  if (holder.data == nullptr) holder.data = pcre2_match_data_create(16, nullptr);
  return holder.data;
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
  if (literal) options = PCRE2_LITERAL | PCRE2_UTF | PCRE2_NO_UTF_CHECK;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                             &error, &offset, nullptr);
  if (code == nullptr) {
    fail("cannot compile the pre-tokenizer regex /{}/ at offset {}: {}", pattern, offset,
         pcre2_message(error));
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = thread_match_data();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    // The text is valid UTF-8 (normalized or repaired before splitting), so skip PCRE2's check.
    int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, md, nullptr)
                  : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("regex match failed for /{}/: {}", pattern_, pcre2_message(rc));
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t begin = ov[0], end = ov[1];
    if (end == begin) {
      // An empty match carries no text; step over one character so the scan always advances.
      if (begin >= text.size()) break;
      pos = begin + size_t(utf8_len(uint8_t(text[begin])));
      continue;
    }
    matches.emplace_back(begin, end);
    pos = end;
  }
}

}  // namespace bitdelta::tok
