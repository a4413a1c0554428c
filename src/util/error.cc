#include "util/error.h"

namespace bitdelta {

void check_failed(const char* condition, const char* file, int line, const std::string& detail) {
  throw std::logic_error(fmt::format("internal error: check '{}' failed at {}:{}{}{}", condition,
                                     file, line, detail.empty() ? "" : ": ", detail));
}

}  // namespace bitdelta
