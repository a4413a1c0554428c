// The server as a real process: `bitdelta serve` on a free loopback port, driven over HTTP.
// Base and users' adapters answer differently and exactly as `bitdelta generate --adapter`;
// streams; OpenAI-shaped errors; tenant isolation on every endpoint; uploads validated with no
// trace on failure; concurrent streams of different users; SIGTERM drains.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "serve/server_process.h"
#include "store/store_test_util.h"
#include "support/test_support.h"
#include "util/files.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto& a = testing::StoreAssets::get();
    dir_ = new testing::ScratchDir();
    for (const auto& f : {a.alice_v1(), a.alice_v2(), a.bob_v1()}) {
      auto r = testing::run_cli("store add --store " + (*dir_ / "store").string() + " " +
                                f.string() + " --model " + a.base().string());
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    testing::write_text(*dir_ / "keys.json", R"({"keys": [
      {"key": "admin-key", "role": "admin"},
      {"key": "alice-key", "role": "tenant", "users": ["alice"]},
      {"key": "edu-key", "role": "tenant", "domains": ["education"]}]})");
    server_ = new ServerProcess("--model " + a.base().string() + " --store " +
                                    (*dir_ / "store").string() + " --api-keys " +
                                    (*dir_ / "keys.json").string() + " --max-batch 4",
                                *dir_ / "server.log");
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  static httplib::Headers auth(const std::string& key) {
    return {{"Authorization", "Bearer " + key}};
  }
  json post(const std::string& path, const json& body, const std::string& key, int expect) {
    auto res = client().Post(path, auth(key), body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return {};
    EXPECT_EQ(res->status, expect) << path << " " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  // What `bitdelta generate` prints for the same prompt (greedy), the reference.
  static std::string cli_generate(const std::string& adapter, const std::string& prompt, int n) {
    const auto& a = testing::StoreAssets::get();
    auto r = testing::run_cli("generate --model " + a.base().string() +
                              (adapter.empty() ? "" : " --adapter " + adapter) + " --prompt '" +
                              prompt + "' --max-tokens " + std::to_string(n) + " --ignore-eos");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  static testing::ScratchDir* dir_;
  static ServerProcess* server_;
};
testing::ScratchDir* ServerTest::dir_ = nullptr;
ServerProcess* ServerTest::server_ = nullptr;

TEST_F(ServerTest, BaseAndAdaptersAnswerLikeGenerate) {
  const auto& a = testing::StoreAssets::get();
  auto completion = [&](const std::string& model) {
    json r = post("/v1/completions",
                  {{"model", model},
                   {"prompt", "Once upon a time"},
                   {"max_tokens", 24},
                   {"temperature", 0},
                   {"stop", json::array()}},
                  "admin-key", 200);
    EXPECT_EQ(r["object"], "text_completion");
    EXPECT_EQ(r["usage"]["completion_tokens"], 24);
    return r["choices"][0]["text"].get<std::string>();
  };
  const std::string base = completion("base"), alice = completion("gaming/alice/v1"),
                    bob = completion("education/bob");
  EXPECT_NE(base, alice);
  EXPECT_NE(alice, bob);
  EXPECT_NE(cli_generate("", "Once upon a time", 24).find(base), std::string::npos);
  EXPECT_NE(cli_generate(a.alice_v1().string(), "Once upon a time", 24).find(alice),
            std::string::npos);
  EXPECT_NE(cli_generate(a.bob_v1().string(), "Once upon a time", 24).find(bob), std::string::npos);
  // "gaming/alice" is the latest version, v2.
  EXPECT_EQ(completion("gaming/alice"), completion("gaming/alice/v2"));
}

// A prompt seen before is restored from the prefix cache (on by default), per adapter, without
// changing the answer; /metrics counts the restored tokens.
TEST_F(ServerTest, RepeatedPromptsReuseTheirPrefixAndAnswerTheSame) {
  const std::string prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park with her friends. One day, she saw a big red ball under a tree and";
  auto completion = [&](const std::string& model) {
    json r = post("/v1/completions",
                  {{"model", model}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}},
                  "admin-key", 200);
    return r["choices"][0]["text"].get<std::string>();
  };
  auto hit_tokens = [&] {
    auto res = client().Get("/metrics");
    EXPECT_TRUE(res);
    std::istringstream lines(res->body);
    const std::string name = "bitdelta_prefix_cache_hit_tokens_total{base=\"base\"} ";
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(name, 0) == 0) return std::stod(line.substr(name.size()));
    }
    return 0.0;
  };
  const double before = hit_tokens();
  const std::string first = completion("gaming/alice/v1");
  EXPECT_EQ(hit_tokens(), before);  // nothing of this prompt was cached yet
  EXPECT_EQ(completion("gaming/alice/v1"), first);
  const double after = hit_tokens();
  EXPECT_GE(after - before, 32);  // at least one whole block restored
  // Another adapter's request does not reuse alice's blocks.
  completion("education/bob");
  EXPECT_EQ(hit_tokens(), after);
}

// OpenAI clients print prompt + text: the text must keep the space after the prompt
// (stories260K's sentencepiece decoder drops a text's leading space; the continuation's first
// token "▁time" must still decode to " time"), streaming or not, and agree with generate.
TEST_F(ServerTest, CompletionTextContinuesThePrompt) {
  for (const std::string prompt : {"Once upon a", "Lily went to the"}) {
    const json body = {{"model", "base"},
                       {"prompt", prompt},
                       {"max_tokens", 12},
                       {"temperature", 0},
                       {"stop", json::array()}};
    const std::string text = post("/v1/completions", body, "admin-key", 200)["choices"][0]["text"];
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text[0], ' ') << text;
    json streaming = body;
    streaming["stream"] = true;
    auto res =
        client().Post("/v1/completions", auth("admin-key"), streaming.dump(), "application/json");
    ASSERT_TRUE(res);
    std::string streamed;
    std::istringstream lines(res->body);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("data: {", 0) == 0) {
        streamed += json::parse(line.substr(6))["choices"][0]["text"].get<std::string>();
      }
    }
    EXPECT_EQ(streamed, text);
    EXPECT_EQ(cli_generate("", prompt, 12), prompt + text + "\n");
  }
}

TEST_F(ServerTest, ChatStreamsServerSentEventsEndingInDone) {
  auto res = client().Post("/v1/chat/completions", auth("alice-key"),
                           json{{"model", "gaming/alice/v1"},
                                {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                {"max_tokens", 10},
                                {"temperature", 0},
                                {"stream", true}}
                               .dump(),
                           "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::string text;
  json last;
  size_t events = 0;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    ++events;
    if (line == "data: [DONE]") break;
    last = json::parse(line.substr(6));
    EXPECT_EQ(last["object"], "chat.completion.chunk");
    text += last["choices"][0]["delta"].value("content", "");
  }
  EXPECT_GE(events, 3u);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 10);
  json whole = post("/v1/chat/completions",
                    {{"model", "gaming/alice/v1"},
                     {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"max_tokens", 10},
                     {"temperature", 0}},
                    "alice-key", 200);
  EXPECT_EQ(whole["choices"][0]["message"]["content"], text);
}

TEST_F(ServerTest, ErrorsAreOpenAIShaped) {
  json r =
      post("/v1/completions", {{"model", "gaming/nobody/v1"}, {"prompt", "x"}}, "admin-key", 404);
  EXPECT_EQ(r["error"]["code"], "model_not_found");
  r = post("/v1/completions", {{"model", "base"}, {"prompt", "x"}, {"temperature", -1}},
           "admin-key", 400);
  EXPECT_EQ(r["error"]["type"], "invalid_request_error");
  r = post("/v1/completions", {{"model", "base"}, {"prompt", "x"}, {"n", 100}}, "admin-key", 400);
  EXPECT_EQ(r["error"]["param"], "n");
  post("/v1/completions", {{"model", "base"}, {"prompt", "x"}, {"max_tokens", 100000}}, "admin-key",
       400);
  post("/v1/completions", {{"prompt", "x"}}, "admin-key", 400);
  auto res = client().Post("/v1/completions", auth("admin-key"), "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  res = client().Post("/v1/completions", json{{"model", "base"}, {"prompt", "x"}}.dump(),
                      "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(client().Get("/health")->status, 200);
  auto metrics = client().Get("/metrics");
  EXPECT_NE(
      metrics->body.find("bitdelta_http_requests_total{endpoint=\"completions\",status=\"400\"}"),
      std::string::npos);
}

TEST_F(ServerTest, TenantsSeeAndTouchOnlyTheirOwn) {
  // alice-key: gaming/alice only; edu-key: the education domain (bob).
  post("/v1/completions", {{"model", "gaming/alice/v1"}, {"prompt", "x"}, {"max_tokens", 1}},
       "alice-key", 200);
  json r =
      post("/v1/completions", {{"model", "education/bob/v1"}, {"prompt", "x"}, {"max_tokens", 1}},
           "alice-key", 404);
  EXPECT_EQ(r["error"]["message"],
            "The model 'education/bob/v1' does not exist or you do not have access to it.");
  post("/v1/completions", {{"model", "base"}, {"prompt", "x"}, {"max_tokens", 1}}, "edu-key", 200);

  auto ids = [&](const std::string& path, const std::string& key) {
    auto res = client().Get(path, auth(key));
    EXPECT_EQ(res->status, 200);
    std::set<std::string> out;
    const json body = json::parse(res->body);
    for (const json& m : body["data"]) out.insert(m["id"].get<std::string>());
    return out;
  };
  EXPECT_EQ(ids("/v1/models", "alice-key"),
            (std::set<std::string>{"base", "gaming/alice/v1", "gaming/alice/v2"}));
  EXPECT_EQ(ids("/v1/models", "edu-key"), (std::set<std::string>{"base", "education/bob/v1"}));
  EXPECT_EQ(ids("/v1/adapters", "edu-key"), (std::set<std::string>{"education/bob/v1"}));
  EXPECT_EQ(client().Get("/v1/adapters/education/bob/v1", auth("alice-key"))->status, 404);
  EXPECT_EQ(client().Get("/v1/adapters/education/bob/v1", auth("edu-key"))->status, 200);
  EXPECT_EQ(client().Delete("/v1/adapters/education/bob/v1", auth("alice-key"))->status, 404);
  const std::string bytes = read_file(testing::StoreAssets::get().bob_v1());
  auto up = client().Post("/v1/adapters?id=education/mallory/v1", auth("alice-key"), bytes,
                          "application/octet-stream");
  EXPECT_EQ(up->status, 403);
  EXPECT_EQ(ids("/v1/adapters", "admin-key").count("education/mallory/v1"), 0u);
}

// GET /v1/audit: the store's log of who did what (here the three `store add`s of the fixture),
// all of it for admins, only their own adapters' entries for tenants, filterable; the chain
// verifies.
TEST_F(ServerTest, AuditLogShowsEachTenantItsOwn) {
  auto get = [&](const std::string& query, const std::string& key) {
    auto res = client().Get("/v1/audit" + query, auth(key));
    EXPECT_TRUE(res);
    return res ? json::parse(res->body, nullptr, false) : json();
  };
  auto ids = [](const json& list) {
    std::set<std::string> out;
    for (const json& e : list["data"]) out.insert(e["adapter_id"].get<std::string>());
    return out;
  };
  const json all = get("", "admin-key");
  EXPECT_GE(all["data"].size(), 3u);
  EXPECT_EQ(all["data"][0]["action"], "upload");
  EXPECT_EQ(all["data"][0]["seq"], 1);
  EXPECT_EQ(all["data"][0]["actor"], "cli");
  EXPECT_EQ(ids(get("?action=upload", "alice-key")),
            (std::set<std::string>{"gaming/alice/v1", "gaming/alice/v2"}));
  EXPECT_EQ(ids(get("?action=upload", "edu-key")), (std::set<std::string>{"education/bob/v1"}));
  EXPECT_EQ(ids(get("?action=upload&user=bob", "admin-key")),
            (std::set<std::string>{"education/bob/v1"}));
  EXPECT_EQ(get("?limit=1", "admin-key")["data"].size(), 1u);
  auto bad = client().Get("/v1/audit?limit=0", auth("admin-key"));
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  auto verify = testing::run_cli("audit verify " + (*dir_ / "store" / "audit.jsonl").string());
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST_F(ServerTest, UploadsAreValidatedAndCorruptOnesLeaveNoTrace) {
  const std::string bytes = read_file(testing::StoreAssets::get().bob_v1());
  auto count_files = [&] {  // SQLite's own -wal/-shm files come and go: not counted
    std::set<std::string> files;
    for (auto& e : fs::recursive_directory_iterator(*dir_ / "store")) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && name.find("registry.db-") == std::string::npos) {
        files.insert(e.path().string());
      }
    }
    return files;
  };
  const std::set<std::string> before = count_files();
  std::string corrupt = bytes;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  corrupt.resize(corrupt.size() - 100);
  auto res = client().Post("/v1/adapters?id=education/eve/v1", auth("edu-key"), corrupt,
                           "application/octet-stream");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(count_files(), before);
  EXPECT_EQ(client().Get("/v1/adapters/education/eve/v1", auth("admin-key"))->status, 404);

  const std::string other = read_file(testing::StoreAssets::get().other_base_adapter());
  res = client().Post("/v1/adapters?id=education/eve/v1", auth("edu-key"), other,
                      "application/octet-stream");
  EXPECT_EQ(res->status, 400) << res->body;  // made for another base

  res = client().Post("/v1/adapters?id=education/eve/v1", auth("edu-key"), bytes,
                      "application/octet-stream");
  ASSERT_EQ(res->status, 201) << res->body;
  EXPECT_EQ(json::parse(res->body)["id"], "education/eve/v1");
  post("/v1/completions", {{"model", "education/eve"}, {"prompt", "x"}, {"max_tokens", 2}},
       "edu-key", 200);
  res = client().Post("/v1/adapters?id=education/eve/v1", auth("edu-key"), bytes,
                      "application/octet-stream");
  EXPECT_EQ(res->status, 409);
  EXPECT_EQ(client().Delete("/v1/adapters/education/eve/v1", auth("edu-key"))->status, 200);
  post("/v1/completions", {{"model", "education/eve"}, {"prompt", "x"}, {"max_tokens", 2}},
       "edu-key", 404);
}

// An adapter that changes only some tensors records the fingerprint of just those: the server
// must check it against the base, not compare it with a whole-model fingerprint.
TEST_F(ServerTest, AdapterOfAPartialFineTuneIsAccepted) {
  const auto& a = testing::StoreAssets::get();
  const fs::path ft = *dir_ / "mlp_only";
  testing::make_finetune(a.base(), ft, 77, 0.1f, [](const std::string& name) {
    return name.find("mlp") != std::string::npos;
  });
  CompressOptions options;
  options.adapter_id = AdapterId::parse("education/dora/v1");
  compress_adapter(a.base(), ft, *dir_ / "dora.bdelta", options, default_thread_pool());
  auto res = client().Post("/v1/adapters?id=education/dora/v1", auth("edu-key"),
                           read_file(*dir_ / "dora.bdelta"), "application/octet-stream");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  post("/v1/completions", {{"model", "education/dora"}, {"prompt", "x"}, {"max_tokens", 2}},
       "edu-key", 200);
  EXPECT_EQ(client().Delete("/v1/adapters/education/dora/v1", auth("edu-key"))->status, 200);
}

TEST_F(ServerTest, ConcurrentStreamsOfDifferentUsersMatchRunningAlone) {
  const char* models[] = {"base", "gaming/alice/v1", "gaming/alice/v2", "education/bob/v1"};
  const char* prompts[] = {"Once upon a time", "The cat", "Tom had a"};
  std::map<std::pair<int, int>, std::string> alone;
  for (int m = 0; m < 4; ++m) {
    for (int p = 0; p < 3; ++p) {
      alone[{m, p}] = post(
          "/v1/completions",
          {{"model", models[m]}, {"prompt", prompts[p]}, {"max_tokens", 16}, {"temperature", 0}},
          "admin-key", 200)["choices"][0]["text"];
    }
  }
  std::vector<std::thread> threads;
  std::vector<std::string> got(12);
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back([&, i] {
      auto res = client().Post("/v1/completions", auth("admin-key"),
                               json{{"model", models[i % 4]},
                                    {"prompt", prompts[i % 3]},
                                    {"max_tokens", 16},
                                    {"temperature", 0},
                                    {"stream", true}}
                                   .dump(),
                               "application/json");
      if (!res || res->status != 200) return;
      std::istringstream lines(res->body);
      for (std::string line; std::getline(lines, line);) {
        if (line.rfind("data: {", 0) == 0) {
          got[i] += json::parse(line.substr(6))["choices"][0]["text"].get<std::string>();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(got[i], (alone[{i % 4, i % 3}])) << "stream " << i;
}

// A raw HTTP/1.1 exchange, read as it arrives: the test must see the stream start before it
// sends SIGTERM.
class RawStream {
 public:
  RawStream(int port, const std::string& body) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    EXPECT_EQ(write(fd_, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  }
  ~RawStream() { close(fd_); }
  void close_now() {
    close(fd_);
    fd_ = -1;
  }
  // Reads until `needle` has arrived (or EOF); returns everything read so far.
  const std::string& read_until(const std::string& needle) {
    char buf[4096];
    while (got_.find(needle) == std::string::npos) {
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      got_.append(buf, static_cast<size_t>(n));
    }
    return got_;
  }

 private:
  int fd_ = -1;
  std::string got_;
};

// `bitdelta serve` of the test base with an empty store in `dir`, one model thread, plus `args`;
// its log is dir/log.
std::unique_ptr<ServerProcess> serve_test_base(const testing::ScratchDir& dir,
                                               const std::string& args = "") {
  const auto& a = testing::StoreAssets::get();
  return std::make_unique<ServerProcess>("--model " + a.base().string() + " --store " +
                                             (dir / "store").string() + " --threads 1" + args,
                                         dir / "log");
}

TEST(ServerProcessTest, SigtermFinishesTheStreamInFlight) {
  testing::ScratchDir dir;
  auto server_ptr = serve_test_base(dir);
  ServerProcess& server = *server_ptr;
  ASSERT_GT(server.port(), 0);
  RawStream stream(server.port(), json{{"model", "base"},
                                       {"prompt", "Once"},
                                       {"max_tokens", 500},
                                       {"temperature", 0},
                                       {"stream", true}}
                                      .dump());
  stream.read_until("data: {");  // generating
  std::thread term([&] { EXPECT_EQ(server.terminate(), 0); });
  const std::string& all = stream.read_until("data: [DONE]");
  term.join();
  EXPECT_NE(all.find("\"completion_tokens\":500"), std::string::npos) << all.substr(0, 300);
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos);
  EXPECT_NE(testing::read_text(dir / "log").find("draining"), std::string::npos);
}

// A user gets the same text for the same request (greedy, or sampled with a seed) whatever else the
// server is doing: on a
// model wide enough that adapters take the int8 table pass (hidden 512, intermediate 1024), bursts
// of concurrent identical and different requests — streaming or not, prompts of 11 to 88 tokens,
// the longest prefilled in two chunks, alone or beside other users' prefills and decodes — all
// match the text each request got alone.
// (Before the forward pass was batch-invariant, a prompt prefilled alone went through merged
// panels and beside others through the table pass, and identical requests diverged.)
TEST(ServerProcessTest, SameRequestGetsTheSameTextWhateverTheBatch) {
  testing::ScratchDir dir;
  {
    ThreadPool pool(2);
    testing::make_wide_base(dir / "wide");
    for (int user = 1; user <= 3; ++user) {
      const auto ft = dir / ("ft" + std::to_string(user));
      testing::make_finetune(dir / "wide", ft, 40 + user, 0.3f);
      CompressOptions options;
      options.granularity = user == 2 ? ScaleGranularity::kTensor : ScaleGranularity::kRow;
      options.adapter_id = AdapterId::parse("general/u" + std::to_string(user) + "/v1");
      const auto file = dir / ("u" + std::to_string(user) + ".bdelta");
      compress_adapter(dir / "wide", ft, file, options, pool);
      auto r = testing::run_cli("store add --store " + (dir / "store").string() + " " +
                                file.string() + " --model " + (dir / "wide").string());
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
  }
  ServerProcess server("--model " + (dir / "wide").string() + " --store " +
                           (dir / "store").string() + " --max-batch 6 --prefill-chunk 48",
                       dir / "log");
  ASSERT_GT(server.port(), 0);
  // Greedy and seeded sampling are both "the same request"; seeded sampling at temperature 1 also
  // makes the test sensitive: a random model's greedy text soon repeats one token by a wide margin,
  // while each sampled token is a fresh chance for a tiny difference in the logits to show.
  struct Request {
    std::string model, prompt;
    double temperature = 1.0;
  };
  const std::string long_prompt =
      "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods.";
  const std::vector<Request> kinds = {
      {"general/u1/v1", long_prompt},
      {"general/u2/v1", long_prompt},
      {"general/u3/v1", "Once upon a time in a land far away, there"},
      {"wide", "Hello there"},
      {"general/u1/v1", "Hello there", 0.0}};
  const auto complete = [&](const Request& r, bool stream) {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(120, 0);
    const json body = {{"model", r.model},  {"prompt", r.prompt},
                       {"max_tokens", 160}, {"temperature", r.temperature},
                       {"seed", 7},         {"stop", json::array()},
                       {"stream", stream}};
    auto res = c.Post("/v1/completions", body.dump(), "application/json");
    if (!res || res->status != 200) return std::string("error: ") + (res ? res->body : "no answer");
    if (!stream) return json::parse(res->body)["choices"][0]["text"].get<std::string>();
    std::string text;
    std::istringstream lines(res->body);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("data: {", 0) == 0) {
        text += json::parse(line.substr(6))["choices"][0]["text"].get<std::string>();
      }
    }
    return text;
  };
  std::vector<std::string> alone;
  for (const auto& k : kinds) alone.push_back(complete(k, false));
  EXPECT_NE(alone[0], alone[1]) << "different adapters should answer differently";
  // On this byte-level tokenizer too, prompt + text is what generate prints (the decode of all
  // ids; the server may stop earlier, at <|endoftext|>, which generate does not stop at).
  auto cli = testing::run_cli("generate --model " + (dir / "wide").string() + " --adapter " +
                              (dir / "u1.bdelta").string() + " --prompt 'Hello there' -n 160");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out.rfind("Hello there" + alone[4], 0), 0u) << cli.out << "\nvs\n" << alone[4];
  // 8 identical requests of the first kind, 2 of each other kind, all at once; twice.
  std::vector<size_t> burst(8, 0);
  for (size_t k = 1; k < kinds.size(); ++k) burst.insert(burst.end(), {k, k});
  for (int round = 0; round < 2; ++round) {
    std::vector<std::string> got(burst.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < burst.size(); ++i) {
      threads.emplace_back([&, i] { got[i] = complete(kinds[burst[i]], (i + round) % 2 == 1); });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < burst.size(); ++i) {
      EXPECT_EQ(got[i], alone[burst[i]])
          << "round " << round << ", request " << i << " (" << kinds[burst[i]].model << ")";
    }
  }
}

// A port that is already listening (another bitdelta serve, or any program) is an error at start,
// not a second server that the kernel splits connections with; ports beyond 65535 are refused
// rather than truncated to 16 bits.
TEST(ServerProcessTest, PortInUseAndInvalidPortsAreErrors) {
  testing::ScratchDir dir;
  auto first = serve_test_base(dir);
  ASSERT_GT(first->port(), 0);
  const auto& a = testing::StoreAssets::get();
  const std::string serve = "timeout 60 '" + std::string(BITDELTA_CLI_PATH) + "' serve --model " +
                            a.base().string() + " --store " + (dir / "store2").string();
  auto second = testing::run_command(serve + " --port " + std::to_string(first->port()));
  EXPECT_EQ(second.exit_code, 1) << second.out << second.err;
  EXPECT_NE(second.err.find("in use"), std::string::npos) << second.err;
  EXPECT_EQ(second.out.find("serving"), std::string::npos) << second.out;
  // The first server still answers every request alone.
  httplib::Client c("127.0.0.1", first->port());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c.Get("/health")->status, 200);

  for (const char* bad : {"99999", "65536", "-1"}) {
    auto r = testing::run_command(serve + " --port " + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(r.out.find("serving"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("65535"), std::string::npos) << bad << ": " << r.err;
  }
}

// The value of an unlabelled metric in /metrics (-1 when absent).
double metric(int port, const std::string& name) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/metrics");
  if (!res) return -1;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

// A client that sends a request and leaves at once: the server notices on its next write and
// cancels the request, streaming or not (the non-streaming answer writes a space per token
// before its JSON), long before the 500 tokens it asked for; nothing is counted as generated and
// no sequence stays in the batch.
TEST(ServerProcessTest, ClientThatLeavesIsCancelled) {
  testing::ScratchDir dir;
  auto server_ptr = serve_test_base(dir);
  ServerProcess& server = *server_ptr;
  ASSERT_GT(server.port(), 0);
  int expected = 0;
  for (bool stream : {false, true}) {
    RawStream client(server.port(), json{{"model", "base"},
                                         {"prompt", "Once"},
                                         {"max_tokens", 500},
                                         {"temperature", 0},
                                         {"stream", stream}}
                                        .dump());
    client.close_now();
    ++expected;
    for (int i = 0;
         i < 200 && metric(server.port(), "bitdelta_requests_cancelled_total") < expected; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    EXPECT_EQ(metric(server.port(), "bitdelta_requests_cancelled_total"), expected)
        << "stream=" << stream << "\n"
        << testing::read_text(dir / "log");
  }
  EXPECT_EQ(metric(server.port(), "bitdelta_completion_tokens_total"), 0);
  for (int i = 0; i < 100 && metric(server.port(), "bitdelta_active_sequences") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(metric(server.port(), "bitdelta_active_sequences"), 0);
  // The server still answers (non-streaming, after the spaces, a JSON body).
  httplib::Client c("127.0.0.1", server.port());
  auto res = c.Post("/v1/completions",
                    json{{"model", "base"}, {"prompt", "Once"}, {"max_tokens", 5}}.dump(),
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["usage"]["completion_tokens"], 5) << res->body;
}

// More requests at once than the batch and the queue hold: the rest get 429, in OpenAI's error
// shape with Retry-After, while the accepted ones complete.
TEST(ServerProcessTest, FullQueueAnswers429WithRetryAfter) {
  testing::ScratchDir dir;
  auto server_ptr = serve_test_base(dir, " --max-batch 1 --max-queue 1");
  ServerProcess& server = *server_ptr;
  ASSERT_GT(server.port(), 0);
  std::vector<std::unique_ptr<RawStream>> clients;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(std::make_unique<RawStream>(
        server.port(),
        json{{"model", "base"}, {"prompt", "Once"}, {"max_tokens", 400}, {"temperature", 0}}
            .dump()));
  }
  int ok = 0, limited = 0;
  for (auto& c : clients) {
    const std::string& all = c->read_until("\r\n\r\n{never}");  // the whole response (EOF)
    if (all.rfind("HTTP/1.1 200", 0) == 0) {
      ++ok;
      EXPECT_NE(all.find("\"completion_tokens\":400"), std::string::npos);
    } else {
      ASSERT_EQ(all.rfind("HTTP/1.1 429", 0), 0u) << all;
      ++limited;
      EXPECT_NE(all.find("Retry-After: 1"), std::string::npos) << all;
      EXPECT_NE(all.find("\"type\":\"rate_limit_error\""), std::string::npos) << all;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(limited, 3);  // at most one decoding and one waiting when they arrive
}

}  // namespace
}  // namespace bitdelta

namespace bitdelta {
namespace {

// Two bases in one server: each adapter runs on the base whose fingerprint it carries and
// answers exactly as `generate` does on that base; /v1/models lists both bases (with their
// context) and says which base each adapter runs on; batching metrics are kept per base.
TEST(ServerProcessTest, SeveralBasesEachServeTheirOwnAdapters) {
  const auto& a = testing::StoreAssets::get();
  testing::ScratchDir dir;
  const fs::path other = a.dir() / "ft21";  // the base gaming/carol/v1 was made against
  for (const auto& f : {a.alice_v1(), a.other_base_adapter()}) {
    auto r = testing::run_cli("store add --store " + (dir / "store").string() + " " + f.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  ServerProcess server("--model tutor=" + a.base().string() + " --model npc=" + other.string() +
                           " --domain-base gaming=npc --store " + (dir / "store").string() +
                           " --threads 1",
                       dir / "log");
  ASSERT_GT(server.port(), 0);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  std::map<std::string, json> by_id;
  const json listed = json::parse(models->body);
  for (const json& m : listed["data"]) by_id[m["id"].get<std::string>()] = m;
  ASSERT_TRUE(by_id.count("tutor") && by_id.count("npc")) << models->body;
  EXPECT_EQ(by_id["tutor"]["context_length"], 512);
  EXPECT_EQ(by_id["npc"]["domains"], json::array({"gaming"}));
  EXPECT_EQ(by_id["gaming/alice/v1"]["base"], "tutor");
  EXPECT_EQ(by_id["gaming/carol/v1"]["base"], "npc");

  auto completion = [&](const std::string& model) {
    auto res = c.Post("/v1/completions",
                      json{{"model", model},
                           {"prompt", "Once upon a time"},
                           {"max_tokens", 20},
                           {"temperature", 0},
                           {"stop", json::array()}}
                          .dump(),
                      "application/json");
    EXPECT_TRUE(res);
    if (!res) return std::string();
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body)["choices"][0]["text"].get<std::string>();
  };
  auto generate = [&](const fs::path& base, const std::string& adapter) {
    auto r = testing::run_cli("generate --model " + base.string() +
                              (adapter.empty() ? "" : " --adapter " + adapter) +
                              " --prompt 'Once upon a time' --max-tokens 20 --ignore-eos");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string npc = completion("npc"), carol = completion("gaming/carol/v1"),
                    alice = completion("gaming/alice/v1"), tutor = completion("tutor");
  EXPECT_EQ("Once upon a time" + npc + "\n", generate(other, ""));
  EXPECT_EQ("Once upon a time" + carol + "\n", generate(other, a.other_base_adapter().string()));
  EXPECT_EQ("Once upon a time" + alice + "\n", generate(a.base(), a.alice_v1().string()));
  EXPECT_EQ("Once upon a time" + tutor + "\n", generate(a.base(), ""));
  EXPECT_NE(npc, tutor);

  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("bitdelta_base_batch_sequences_count{base=\"npc\"}"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("bitdelta_adapter_cache_misses_total{base=\"npc\"} 1"),
            std::string::npos)
      << metrics->body.substr(0, 3000);

  // Bad mappings are refused at start.
  auto bad = testing::run_cli("serve --model " + a.base().string() +
                              " --domain-base gaming=nope --store " + (dir / "store2").string() +
                              " --port 0");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("no base is named 'nope'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace bitdelta

namespace bitdelta {
namespace {

// --require-signatures: uploads are refused with 403 naming the check that failed (no signature,
// unknown key, bad signature, file changed after signing); a valid one is kept and shown with
// its signer; stored adapters are re-verified (bytes and signature) before they are first used.
TEST(ServerProcessTest, RequiredSignaturesAreCheckedOnUploadAndOnLoad) {
  const auto& a = testing::StoreAssets::get();
  testing::ScratchDir dir;
  for (const char* who : {"alice", "mallory"}) {
    ASSERT_EQ(testing::run_cli("keys generate --out " + (dir / who).string()).exit_code, 0);
  }
  fs::create_directories(dir / "trusted");
  fs::copy_file(dir / "alice" / "public_key.json", dir / "trusted" / "alice.json");
  // An unsigned adapter already in the store before the server starts.
  ASSERT_EQ(
      testing::run_cli("store add --store " + (dir / "store").string() + " " + a.bob_v1().string())
          .exit_code,
      0);
  auto signature = [&](const fs::path& file, const char* who) {
    const fs::path out = dir / (file.filename().string() + "." + who + ".sig.json");
    auto r = testing::run_cli("sign " + file.string() + " --key " + (dir / who).string() +
                              " --out " + out.string());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return testing::read_text(out);
  };
  ServerProcess server("--model " + a.base().string() + " --store " + (dir / "store").string() +
                           " --trusted-keys " + (dir / "trusted").string() +
                           " --require-signatures --threads 1",
                       dir / "log");
  ASSERT_GT(server.port(), 0);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const std::string alice_v1 = testing::read_text(a.alice_v1());
  auto upload = [&](const std::string& id, const std::string& bytes,
                    const std::optional<std::string>& sig) {
    httplib::MultipartFormDataItems form = {
        {"file", bytes, "a.bdelta", "application/octet-stream"}};
    if (sig) form.push_back({"signature", *sig, "a.bdelta.sig.json", "application/json"});
    auto res = c.Post("/v1/adapters?id=" + id, form);
    EXPECT_TRUE(res);
    return res ? std::pair{res->status, res->body} : std::pair{0, std::string()};
  };
  auto refused = [&](const std::pair<int, std::string>& r, const std::string& check) {
    EXPECT_EQ(r.first, 403) << r.second;
    EXPECT_NE(r.second.find(check), std::string::npos) << r.second;
  };
  refused(upload("gaming/alice/v1", alice_v1, std::nullopt), "no signature");
  refused(upload("gaming/alice/v1", alice_v1, signature(a.alice_v1(), "mallory")), "unknown key");
  refused(upload("gaming/alice/v1", alice_v1, signature(a.alice_v2(), "alice")),
          "file changed after signing");
  json edited = json::parse(signature(a.alice_v1(), "alice"));
  edited["signed_at"] = "2020-01-01T00:00:00Z";
  refused(upload("gaming/alice/v1", alice_v1, edited.dump()), "bad signature");
  EXPECT_EQ(json::parse(c.Get("/v1/adapters")->body)["data"].size(), 1u) << "only bob";

  // A valid signature in the header: accepted, kept, shown.
  auto ok = c.Post("/v1/adapters?id=gaming/alice/v1",
                   {{"X-BitDelta-Signature", json::parse(signature(a.alice_v1(), "alice")).dump()}},
                   alice_v1, "application/octet-stream");
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 201) << ok->body;
  const json shown = json::parse(c.Get("/v1/adapters/gaming/alice/v1")->body);
  EXPECT_EQ(shown["signature"]["status"], "valid") << shown.dump();
  EXPECT_EQ(shown["signature"]["trusted"], true);
  EXPECT_EQ(shown["signature"]["key_id"],
            json::parse(testing::read_text(dir / "alice" / "public_key.json"))["key_id"]);
  EXPECT_EQ(json::parse(c.Get("/v1/adapters/education/bob/v1")->body)["signature"]["status"],
            "unsigned");

  auto complete = [&](const std::string& model) {
    auto res = c.Post("/v1/completions",
                      json{{"model", model}, {"prompt", "Once"}, {"max_tokens", 4}}.dump(),
                      "application/json");
    EXPECT_TRUE(res);
    return res ? std::pair{res->status, res->body} : std::pair{0, std::string()};
  };
  EXPECT_EQ(complete("gaming/alice/v1").first, 200);
  // The unsigned adapter stored before: refused when it would be loaded.
  const auto bob = complete("education/bob/v1");
  EXPECT_EQ(bob.first, 403);
  EXPECT_NE(bob.second.find("failed its signature check"), std::string::npos) << bob.second;

  // A signed adapter whose stored file changes on disk is caught before its first load.
  const std::string alice_v2 = testing::read_text(a.alice_v2());
  auto v2 = c.Post("/v1/adapters?id=gaming/alice/v2",
                   {{"X-BitDelta-Signature", json::parse(signature(a.alice_v2(), "alice")).dump()}},
                   alice_v2, "application/octet-stream");
  ASSERT_TRUE(v2);
  ASSERT_EQ(v2->status, 201) << v2->body;
  const std::string sha = json::parse(v2->body)["sha256"];
  const fs::path blob = dir / "store" / "blobs" / "sha256" / sha.substr(0, 2) / sha;
  ASSERT_TRUE(fs::exists(blob));
  fs::permissions(blob, fs::perms::owner_write, fs::perm_options::add);
  std::string bytes = testing::read_text(blob);
  bytes[bytes.size() / 2] ^= 1;
  testing::write_text(blob, bytes);
  const auto tampered = complete("gaming/alice/v2");
  EXPECT_EQ(tampered.first, 500);
  EXPECT_NE(tampered.second.find("changed on disk"), std::string::npos) << tampered.second;
}

}  // namespace
}  // namespace bitdelta

namespace bitdelta {
namespace {

// serve --safety-gate: uploads run the gate (docs/safety.md). An adapter that passes is kept
// with its report; one with an inflated scale is refused with 422 naming the tensor, recorded in
// the audit log as rejected, and nothing is stored. Uploads carry no compute receipt.
TEST(ServerProcessTest, TheSafetyGateChecksUploads) {
  const auto& a = testing::StoreAssets::get();
  testing::ScratchDir dir;
  const std::string scale = "model.layers.1.mlp.up_proj.weight.scale";
  const fs::path inflated = dir / "inflated.bdelta";
  testing::rewrite(a.alice_v1(), inflated,
                   [&](std::map<std::string, std::string>& meta,
                       std::map<std::string, testing::RawTensor>& tensors) {
                     meta.erase("checksums");
                     ASSERT_EQ(tensors.count(scale), 1u);
                     auto& bytes = tensors[scale].bytes;
                     for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
                       float v;
                       std::memcpy(&v, bytes.data() + i, 4);
                       v *= 40;
                       std::memcpy(bytes.data() + i, &v, 4);
                     }
                   });
  ServerProcess server("--model " + a.base().string() + " --store " + (dir / "store").string() +
                           " --safety-gate --threads 1",
                       dir / "log");
  ASSERT_GT(server.port(), 0);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  auto upload = [&](const std::string& id, const fs::path& file) {
    return c.Post("/v1/adapters?id=" + id, testing::read_text(file), "application/octet-stream");
  };
  auto ok = upload("gaming/alice/v1", a.alice_v1());
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 201) << ok->body;
  const json shown = json::parse(c.Get("/v1/adapters/gaming/alice/v1")->body);
  EXPECT_EQ(shown["safety"]["passed"], true) << shown.dump();
  EXPECT_GE(shown["safety"]["safety_score"].get<double>(), 0.95);
  EXPECT_EQ(shown["safety"]["probes"]["source"], "builtin:stories-v1");
  EXPECT_TRUE(shown["receipt"].is_null());
  auto receipt = c.Get("/v1/adapters/gaming/alice/v1/receipt");
  ASSERT_TRUE(receipt);
  EXPECT_EQ(receipt->status, 404);
  EXPECT_NE(receipt->body.find("no compute receipt"), std::string::npos) << receipt->body;

  auto bad = upload("gaming/alice/v2", inflated);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 422) << bad->body;
  EXPECT_NE(bad->body.find("safety_gate_failed"), std::string::npos) << bad->body;
  EXPECT_NE(bad->body.find(scale), std::string::npos) << bad->body;
  EXPECT_EQ(c.Get("/v1/adapters/gaming/alice/v2")->status, 404);
  const std::string audit = testing::read_text(dir / "store" / "audit.jsonl");
  EXPECT_NE(audit.find("\"action\":\"reject\""), std::string::npos) << audit;
}

}  // namespace
}  // namespace bitdelta
