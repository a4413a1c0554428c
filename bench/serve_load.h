// Streaming load against a running server, shared by the serving benchmarks: one request's
// time to first token and inter-token gaps, collected across client threads.
#pragma once

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bitdelta::bench {

struct Samples {
  std::mutex mutex;
  std::vector<double> ttft, itl;
  int64_t tokens = 0, errors = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// The prompt of one request: about 33 tokens, different from its first words on for every (round,
// user, request), so that no server's prefix cache turns the load into a cached one.
inline std::string load_prompt(int round, int user, int request) {
  return "Round " + std::to_string(round) + ", user " + std::to_string(user) + ", request " +
         std::to_string(request) +
         ": the history of the city begins with a small market by the river, where traders from "
         "the hills sold wool and salt to";
}

// One streaming completion; records TTFT, the gaps between text chunks, and the token count.
void one_request(int port, const std::string& model, int tokens, Samples& s,
                 const std::string& prompt = "The history of the city begins with") {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = nlohmann::json{
      {"model", model},
      {"prompt", prompt},
      {"max_tokens", tokens},
      {"temperature", 0},
      {"stream",
       true}}.dump();
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  bool first = true;
  std::vector<double> ttft, itl;
  int64_t completion = 0;
  std::string buffer;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      const std::string event = buffer.substr(0, end);
      if (event.rfind("data: {", 0) != 0) continue;
      const nlohmann::json j = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("usage")) completion = j["usage"]["completion_tokens"].get<int64_t>();
      if (j["choices"].empty() || j["choices"][0]["text"].get<std::string>().empty()) continue;
      const auto now = std::chrono::steady_clock::now();
      (first ? ttft : itl).push_back(std::chrono::duration<double>(now - last).count());
      first = false;
      last = now;
    }
    return true;
  };
  auto res = client.send(req);
  std::lock_guard lock(s.mutex);
  if (!res || res->status != 200 || completion == 0) {
    ++s.errors;
    return;
  }
  s.tokens += completion;
  s.ttft.insert(s.ttft.end(), ttft.begin(), ttft.end());
  s.itl.insert(s.itl.end(), itl.begin(), itl.end());
}

}  // namespace bitdelta::bench
