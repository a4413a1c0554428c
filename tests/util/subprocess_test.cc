// run_command: an operator's command through /bin/sh -c with text on stdin, its stdout/stderr
// collected (at most 64 KiB each), its exit status, and a time limit that kills its whole
// process group.
#include "util/subprocess.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace bitdelta {
namespace {

constexpr size_t kKeep = 64 << 10;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(RunCommand, CapturesStdoutAndStderr) {
  const CommandResult r = run_command("echo hello; echo world >&2; printf 'a\\nb'", "", 10);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "hello\na\nb");
  EXPECT_EQ(r.err, "world\n");
  const CommandResult none = run_command("true", "", 10);
  EXPECT_EQ(none.exit_code, 0);
  EXPECT_EQ(none.out, "");
  EXPECT_EQ(none.err, "");
}

TEST(RunCommand, DeliversStdinAndClosesIt) {
  const CommandResult r = run_command("wc -c | tr -d ' '", "hello", 10);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "5\n");
  // More than a pipe holds, while the command writes back as it reads: no deadlock.
  const std::string big(1 << 20, 'x');
  const CommandResult copied = run_command("cat", big, 10);
  EXPECT_FALSE(copied.timed_out);
  EXPECT_EQ(copied.exit_code, 0);
  EXPECT_EQ(copied.out, big.substr(0, kKeep));
  const CommandResult counted = run_command("wc -c | tr -d ' '", big, 10);
  EXPECT_EQ(counted.out, std::to_string(big.size()) + "\n");
  // Lines arrive intact and end of input is seen (cat would wait forever otherwise).
  const CommandResult lines = run_command("cat; echo end", "one\ntwo\n", 10);
  EXPECT_EQ(lines.out, "one\ntwo\nend\n");
  EXPECT_FALSE(lines.timed_out);
  // No input: stdin is at end of file at once.
  EXPECT_EQ(run_command("cat; echo done", "", 10).out, "done\n");
}

TEST(RunCommand, ACommandThatDoesNotReadItsInputIsNoProblem) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r = run_command("echo 4", std::string(1 << 20, 'y'), 10);
  EXPECT_LT(seconds_since(start), 5);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "4\n");
}

TEST(RunCommand, ExitCodes) {
  EXPECT_EQ(run_command("exit 3", "", 10).exit_code, 3);
  EXPECT_EQ(run_command("exit 0", "", 10).exit_code, 0);
  EXPECT_EQ(run_command("false", "", 10).exit_code, 1);
  const CommandResult missing = run_command("no-such-command-bitdelta-test", "", 10);
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_FALSE(missing.err.empty());
  // Killed by a signal: -1, and not a time-out.
  const CommandResult killed = run_command("kill -9 $$", "", 10);
  EXPECT_EQ(killed.exit_code, -1);
  EXPECT_FALSE(killed.timed_out);
}

TEST(RunCommand, TimeLimitKillsTheCommand) {
  auto start = std::chrono::steady_clock::now();
  const CommandResult r = run_command("sleep 10", "", 0.5);
  EXPECT_LT(seconds_since(start), 1.5);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);

  // What it printed before the limit is kept; its children die with it (the process group).
  start = std::chrono::steady_clock::now();
  const CommandResult tree = run_command("echo started; sleep 10 & sleep 10; wait", "", 0.5);
  EXPECT_LT(seconds_since(start), 1.5);
  EXPECT_TRUE(tree.timed_out);
  EXPECT_EQ(tree.out, "started\n");

  // A command that never stops writing is stopped too, its output cut at 64 KiB.
  start = std::chrono::steady_clock::now();
  const CommandResult endless = run_command("yes", "", 0.5);
  EXPECT_LT(seconds_since(start), 1.5);
  EXPECT_TRUE(endless.timed_out);
  EXPECT_EQ(endless.out.size(), kKeep);

  // Fast commands do not wait for the limit.
  start = std::chrono::steady_clock::now();
  EXPECT_FALSE(run_command("echo quick", "", 30).timed_out);
  EXPECT_LT(seconds_since(start), 1.5);
}

// The limit holds even when the command no longer has its stdout and stderr open (it redirected
// them, so there is nothing left to read while it runs).
TEST(RunCommand, TimeLimitHoldsAfterTheCommandClosesItsOutput) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r = run_command("exec >/dev/null 2>&1; sleep 5", "", 0.5);
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
}

// Its input is delivered whole even when it no longer has its stdout and stderr open.
TEST(RunCommand, InputIsDeliveredWholeAfterTheCommandClosesItsOutput) {
  testing::ScratchDir dir;
  const std::string big(1 << 20, 'x');
  const CommandResult r =
      run_command("exec >/dev/null 2>&1; cat > '" + (dir / "copy").string() + "'", big, 10);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(std::filesystem::file_size(dir / "copy"), big.size());
}

TEST(RunCommand, OutputBeyond64KiBIsCut) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r = run_command(
      "head -c 300000 /dev/zero | tr '\\0' 'o'; head -c 200000 /dev/zero | tr '\\0' 'e' >&2", "",
      30);
  EXPECT_LT(seconds_since(start), 10);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << "the command ran to the end: its output was drained";
  EXPECT_EQ(r.out, std::string(kKeep, 'o'));
  EXPECT_EQ(r.err, std::string(kKeep, 'e'));
  // Exactly 64 KiB is kept whole.
  EXPECT_EQ(run_command("head -c 65536 /dev/zero | tr '\\0' 'z'", "", 30).out,
            std::string(kKeep, 'z'));
}

}  // namespace
}  // namespace bitdelta
