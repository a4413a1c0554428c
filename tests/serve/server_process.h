// A `bitdelta serve` child process for the server tests, driven over HTTP on loopback.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace bitdelta {

// A `bitdelta serve` child process; its port is read from the line it prints.
class ServerProcess {
 public:
  ServerProcess(const std::string& args, const std::filesystem::path& log) {
    pid_ = fork();
    if (pid_ == 0) {
      const std::string cmd = std::string("exec '") + BITDELTA_CLI_PATH + "' serve --port 0 " +
                              args + " >'" + log.string() + "' 2>&1";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(log);
      std::string line;
      while (std::getline(in, line)) {
        auto at = line.rfind(':');
        if (line.rfind("serving ", 0) == 0 && at != std::string::npos) {
          port_ = std::stoi(line.substr(at + 1));
        }
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "the server exited: " << testing::read_text(log);
        return;
      }
    }
    EXPECT_GT(port_, 0) << testing::read_text(log);
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  // SIGKILL: the process dies at once, as in a crash.
  void kill9() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGTERM, then the exit code.
  int terminate() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace bitdelta
