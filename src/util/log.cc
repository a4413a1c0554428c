#include "util/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace bitdelta {

void set_log_verbosity(int verbosity) {
  static auto logger = [] {
    auto l = spdlog::stderr_color_mt("bitdelta");
    l->set_pattern("[%H:%M:%S.%e %^%l%$] %v");
    spdlog::set_default_logger(l);
    return l;
  }();
  logger->set_level(verbosity <= 0   ? spdlog::level::warn
                    : verbosity == 1 ? spdlog::level::info
                                     : spdlog::level::debug);
}

}  // namespace bitdelta
