// Adapter ids: {domain}/{user_id}/v{version}, e.g. education/did:lux:122:0xabc/v3. Ids reach
// storage keys and file names, so they are parsed strictly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bitdelta {

struct AdapterId {
  std::string domain;  // [a-z0-9_-]{1,64}
  std::string user;    // [A-Za-z0-9._:@-]{1,128}, not "." or ".."
  int64_t version = 0; // ≥ 1; 0 means "no version given" (domain/user, i.e. latest)

  // Accepts "domain/user/vN" and, with allow_latest, "domain/user". Throws Error explaining the
  // expected form.
  static AdapterId parse(std::string_view text, bool allow_latest = false);
  std::string to_string() const;
  bool operator==(const AdapterId&) const = default;
};

}  // namespace bitdelta
