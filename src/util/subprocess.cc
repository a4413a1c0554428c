#include "util/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "util/error.h"

namespace bitdelta {

namespace {

constexpr size_t kKeep = 64 << 10;

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

CommandResult run_command(const std::string& command, const std::string& input, double timeout_s) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    fail("cannot start '{}': {}", command, std::strerror(errno));
  }
  const pid_t pid = ::fork();
  if (pid < 0) fail("cannot start '{}': {}", command, std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  int to_child = in[1], from_out = out[0], from_err = err[0];
  ::fcntl(to_child, F_SETFL, O_NONBLOCK);
  ::signal(SIGPIPE, SIG_IGN);  // a command that stops reading early must not kill us
  CommandResult r;
  size_t written = 0;
  if (input.empty()) close_fd(to_child);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  char buffer[4096];
  int status = 0;
  bool exited = false;
  // Until the command has exited and its output is drained, or the time limit.
  while (true) {
    if (!exited) {
      pid_t w;
      while ((w = ::waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR) {
      }
      if (w == pid) {
        exited = true;
        close_fd(to_child);  // nobody is left to read the rest
      }
    }
    if (exited && from_out < 0 && from_err < 0) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd fds[3];
    int n = 0;
    if (to_child >= 0) fds[n++] = {to_child, POLLOUT, 0};
    if (from_out >= 0) fds[n++] = {from_out, POLLIN, 0};
    if (from_err >= 0) fds[n++] = {from_err, POLLIN, 0};
    // While the command runs, look at it every 20 ms (its pipes may all be closed already).
    const int wait_ms = static_cast<int>(std::min<int64_t>(left, exited ? 1000 : 20));
    if (::poll(n > 0 ? fds : nullptr, static_cast<nfds_t>(n), wait_ms) < 0) {
      if (errno == EINTR) continue;
      r.timed_out = true;  // cannot watch it: stop it rather than wait forever
      ::kill(-pid, SIGKILL);
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == to_child) {
        const ssize_t k = ::write(to_child, input.data() + written, input.size() - written);
        if (k > 0) written += static_cast<size_t>(k);
        if (k < 0 && errno != EAGAIN) close_fd(to_child);
        if (written == input.size()) close_fd(to_child);
        continue;
      }
      const ssize_t k = ::read(fds[i].fd, buffer, sizeof buffer);
      std::string& sink = fds[i].fd == from_out ? r.out : r.err;
      if (k > 0) {
        if (sink.size() < kKeep)
          sink.append(buffer, std::min<size_t>(static_cast<size_t>(k), kKeep - sink.size()));
      } else if (k == 0 || errno != EAGAIN) {
        close_fd(fds[i].fd == from_out ? from_out : from_err);
      }
    }
  }
  close_fd(to_child);
  close_fd(from_out);
  close_fd(from_err);
  if (!exited) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ::kill(-pid, SIGKILL);  // whatever the shell left running in its group
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

}  // namespace bitdelta
