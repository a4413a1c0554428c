#include "delta/adapter_id.h"

#include <charconv>
#include <fmt/format.h>

#include "util/error.h"

namespace bitdelta {

namespace {

bool valid_domain(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

bool valid_user(std::string_view s) {
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-' || c == '.' || c == ':' || c == '@')) {
      return false;
    }
  }
  return true;
}

}  // namespace

AdapterId AdapterId::parse(std::string_view text, bool allow_latest) {
  auto bad = [&](const char* why) {
    fail("adapter id '{}' is invalid: {}; expected domain/user/vN (domain: lowercase letters, "
         "digits, _ or -; user: letters, digits and . _ : @ -; N ≥ 1), e.g. "
         "education/did:lux:122:0xabc/v3",
         text, why);
  };
  const size_t first = text.find('/');
  if (first == std::string_view::npos) bad("it has no '/'");
  const size_t second = text.find('/', first + 1);
  AdapterId id;
  id.domain = std::string(text.substr(0, first));
  id.user = std::string(text.substr(first + 1, second == std::string_view::npos
                                                   ? std::string_view::npos
                                                   : second - first - 1));
  if (!valid_domain(id.domain)) bad("the domain part");
  if (!valid_user(id.user)) bad("the user part");
  if (second == std::string_view::npos) {
    if (!allow_latest) bad("the version is missing");
    return id;
  }
  std::string_view version = text.substr(second + 1);
  if (version.size() < 2 || version[0] != 'v') bad("the version must look like v3");
  auto [end, ec] = std::from_chars(version.data() + 1, version.data() + version.size(), id.version);
  if (ec != std::errc() || end != version.data() + version.size() || id.version < 1) {
    bad("the version must be a positive integer after 'v'");
  }
  return id;
}

std::string AdapterId::to_string() const {
  return version > 0 ? fmt::format("{}/{}/v{}", domain, user, version)
                     : fmt::format("{}/{}", domain, user);
}

}  // namespace bitdelta
