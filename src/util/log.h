// Logging: quiet by default (warnings and errors only); --verbose raises it.
#pragma once

#include <spdlog/spdlog.h>

namespace bitdelta {

// 0 = warnings only (default), 1 = info, 2+ = debug.
void set_log_verbosity(int verbosity);

}  // namespace bitdelta
