// Running an operator's command (/bin/sh -c) with text on its stdin, collecting its stdout and
// stderr, under a time limit: what pluggable evaluators (--scorer-cmd) need.
#pragma once

#include <string>

namespace bitdelta {

struct CommandResult {
  int exit_code = -1;      // the exit status, or -1 when killed by a signal or the time limit
  bool timed_out = false;  // killed (the whole process group) after the time limit
  std::string out, err;    // stdout, and stderr (at most 64 KiB of each kept)
};

// Runs `command` through /bin/sh -c in its own process group, writes `input` to its stdin and
// closes it, and waits at most `timeout_s` seconds. Throws Error only when the command cannot be
// started at all.
CommandResult run_command(const std::string& command, const std::string& input, double timeout_s);

}  // namespace bitdelta
