// Personalization's cost and its effect on serving.
//
//   personalize_bench [--qwen3 | --qwen3-only] [--latency-users 4] [--latency-tokens 32]
//   [--skip-pipeline]
//                     [--job-on-serving-base]
//
// 1. Pipeline: `bitdelta personalize` (a child process each, so peak memory is the run's own) on
//    stories260K for one user of every shipped domain (data/domains), and with --qwen3 on
//    `synth --like qwen3-0.6b` for the general user (a few steps: the cost per token is the
//    point). Reports wall time, tokens the fine-tune processed, seconds per 1,000 of them, peak
//    resident memory, adapter size and compression, quality retained.
// 2. Serving while a job trains: a server with two bases, `synth --like qwen3-0.6b` (BF16) that
//    users stream from and stories260K that personalizes the general domain, --job-threads 1;
//    inter-token latency p50/p99 of the streaming users idle and then while a personalization
//    job fine-tunes beside them (same run), and the ratio. --job-on-serving-base trains the job
//    on the qwen3-0.6b base itself (about 10 GB more memory).
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "bench_util.h"
#include "serve/server.h"
#include "serve_load.h"
#include "util/error.h"
#include "util/files.h"
#include "util/subprocess.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace bitdelta;

namespace {

std::string cli(const std::string& args) {
  const CommandResult r = run_command(std::string("'") + BITDELTA_CLI_PATH + "' " + args, "", 7200);
  if (r.exit_code != 0) fail("bitdelta {} failed: {}", args.substr(0, 120), r.err.substr(0, 2000));
  return r.out;
}

fs::path source(const std::string& relative) { return fs::path(BITDELTA_SOURCE_DIR) / relative; }

}  // namespace

int main(int argc, char** argv) try {
  bool qwen3 = false, qwen3_only = false, pipeline = true, same_base = false;
  int users = 4, tokens = 32;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) fail("{} needs a value", a);
      return std::string(argv[++i]);
    };
    if (a == "--qwen3")
      qwen3 = true;
    else if (a == "--qwen3-only")
      qwen3 = qwen3_only = true;
    else if (a == "--skip-pipeline")
      pipeline = false;
    else if (a == "--job-on-serving-base")
      same_base = true;
    else if (a == "--latency-users")
      users = std::stoi(next());
    else if (a == "--latency-tokens")
      tokens = std::stoi(next());
    else if (a == "--help" || a == "-h") {
      fmt::print(
          "usage: personalize_bench [--qwen3 | --qwen3-only] [--skip-pipeline] [--latency-users 4] "
          "[--latency-tokens 32] [--job-on-serving-base]\n");
      return 0;
    } else {
      fail("unknown argument '{}' (try --help)", a);
    }
  }
  const fs::path tmp =
      fs::temp_directory_path() / fmt::format("bitdelta-personalize-bench-{}", getpid());
  fs::create_directories(tmp);
  const fs::path assets = BITDELTA_SHARED_ASSETS_DIR;
  const fs::path stories = tmp / "stories260K";
  cli("synth --like qwen3-0.6b --out " + (tmp / "qwen3").string());
  cli("import-llama2c --model " + (assets / "models/stories260K/stories260K.bin").string() +
      " --tokenizer " + (assets / "models/stories260K/tok512.bin").string() + " --out " +
      stories.string());

  if (pipeline) {
    struct Run {
      std::string base_name;
      fs::path base;
      std::string domain, user, extra;
    };
    std::vector<Run> runs = {
        {"stories260K", stories, "education", "learner-03", "--chat-format plain"},
        {"stories260K", stories, "gaming", "npc-smith-grum", "--chat-format plain"},
        {"stories260K", stories, "defi", "0x3333333333333333333333333333333333333333",
         "--chat-format plain"},
        {"stories260K", stories, "general", "user-sailor", "--chat-format plain"}};
    if (qwen3_only) runs.clear();
    if (qwen3) {
      runs.push_back({"qwen3-0.6b (synth)", tmp / "qwen3", "general", "user-sailor",
                      "--steps 4 --batch 2 --calibrate-steps 2 --objective-evals 2"});
    }
    fmt::print(
        "| base | domain | wall s | fine-tune tokens | s per 1,000 tokens | of which fine-tune | "
        "peak RSS | adapter | vs BF16 fine-tune | quality retained |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n");
    for (const Run& r : runs) {
      const json j = json::parse(cli(fmt::format(
          "personalize --base {} --domain {} --user {} --data {} --out {} --json --quiet {}",
          r.base.string(), r.domain, r.user, source("data/domains/" + r.domain + ".jsonl").string(),
          (tmp / "adapter.bdelta").string(), r.extra)));
      const double seconds = j["seconds"], train_tokens = j["train_tokens"];
      const json q = j["heldout"]["quality_retained"];
      const double finetune_s = j["stage_seconds"].value("finetune", 0.0);
      fmt::print(
          "| {} | {} | {:.1f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} GiB | {:.1f} KiB | 1/{:.1f} | {} "
          "|\n",
          r.base_name, r.domain, seconds, train_tokens, 1000 * seconds / train_tokens,
          1000 * finetune_s / train_tokens, j["peak_rss_bytes"].get<double>() / double(1 << 30),
          j["adapter_bytes"].get<double>() / 1024, j["compression_ratio"].get<double>(),
          q.is_null() ? std::string("n/a") : fmt::format("{:.1f}%", 100 * q.get<double>()));
      std::fflush(stdout);
    }
  }

  // 2. Serving latency while a job trains.
  ServeOptions so;
  so.models = {{"qwen3", tmp / "qwen3"}, {"stories260K", stories}};
  if (!same_base) so.domain_bases["general"] = "stories260K";
  so.store = tmp / "store";
  so.port = 0;
  so.job_threads = 1;
  so.personalize_chat_format = "plain";
  so.max_batch = users;
  so.http_threads = users + 8;
  Server server(so);
  std::thread serving([&] { server.run(); });
  auto load = [&] {
    bench::Samples s;
    std::vector<std::thread> threads;
    for (int u = 0; u < users; ++u) {
      threads.emplace_back([&] {
        for (int r = 0; r < 2; ++r) bench::one_request(server.port(), "qwen3", tokens, s);
      });
    }
    for (auto& t : threads) t.join();
    return std::tuple{bench::percentile(s.itl, 0.5), bench::percentile(s.itl, 0.99), s.errors};
  };
  load();  // warm up
  const auto idle = load();
  httplib::Client c("127.0.0.1", server.port());
  json records = json::array();
  for (const auto& line : [&] {
         std::vector<std::string> lines;
         std::istringstream in(read_file(source("data/domains/general.jsonl")));
         for (std::string l; std::getline(in, l);) lines.push_back(l);
         return lines;
       }()) {
    if (!line.empty()) records.push_back(json::parse(line));
  }
  auto res =
      c.Post("/v1/personalize",
             json{{"domain", "general"},
                  {"user", "user-sailor"},
                  {"interactions", records},
                  {"options", {{"steps", 100000}, {"chat_format", same_base ? "auto" : "plain"}}}}
                 .dump(),
             "application/json");
  if (!res || res->status != 202)
    fail("the job was not accepted: {}", res ? res->body : "no answer");
  const std::string id = json::parse(res->body)["id"];
  for (int i = 0; i < 6000; ++i) {
    auto j = c.Get("/v1/jobs/" + id);
    if (j && json::parse(j->body)["progress"].value("step", 0) >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto busy = load();
  auto progress = json::parse(c.Get("/v1/jobs/" + id)->body)["progress"];
  c.Delete("/v1/jobs/" + id);
  fmt::print(
      "\nserving qwen3-0.6b (synth, BF16, {} model threads) to {} streaming users ({} "
      "tokens each) while a personalization job fine-tunes {} beside them (--job-threads "
      "1; the job reached: {})\n\n",
      default_thread_pool().size(), users, tokens, same_base ? "qwen3-0.6b" : "stories260K",
      progress.value("message", "?"));
  fmt::print("| | ITL p50 (ms) | ITL p99 (ms) | errors |\n|---|---|---|---|\n");
  fmt::print("| idle | {:.2f} | {:.2f} | {} |\n", 1e3 * std::get<0>(idle), 1e3 * std::get<1>(idle),
             std::get<2>(idle));
  fmt::print("| job training | {:.2f} | {:.2f} | {} |\n", 1e3 * std::get<0>(busy),
             1e3 * std::get<1>(busy), std::get<2>(busy));
  fmt::print("| training ÷ idle | {:.2f} | {:.2f} | |\n", std::get<0>(busy) / std::get<0>(idle),
             std::get<1>(busy) / std::get<1>(idle));
  server.stop();
  serving.join();
  fs::remove_all(tmp);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
