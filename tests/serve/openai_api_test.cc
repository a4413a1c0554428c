// The OpenAI API's depth on a real `bitdelta serve` process: log probabilities checked against
// the `logits` command (base and adapter), n choices, logit_bias and penalties, stream_options,
// echo, /tokenize and /detokenize, and a 400 naming every field that is not implemented.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.h"
#include "serve/server_process.h"
#include "store/store_test_util.h"
#include "support/test_support.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class OpenAiApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto& a = testing::StoreAssets::get();
    dir_ = new testing::ScratchDir();
    auto r = testing::run_cli("store add --store " + (*dir_ / "store").string() + " " +
                              a.alice_v1().string() + " --model " + a.base().string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    server_ = new ServerProcess("--model " + a.base().string() + " --store " +
                                    (*dir_ / "store").string() + " --max-batch 4",
                                *dir_ / "server.log");
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  static json post(const std::string& path, const json& body, int expect = 200) {
    auto res = client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return {};
    EXPECT_EQ(res->status, expect) << path << " " << body.dump() << " -> " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  // The data events of a streamed answer, up to [DONE] (which must come).
  static std::vector<json> stream(const std::string& path, json body) {
    body["stream"] = true;
    auto res = client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
    std::vector<json> events;
    bool done = false;
    std::istringstream lines(res ? res->body : "");
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("data: ", 0) != 0) continue;
      if (line == "data: [DONE]") {
        done = true;
        break;
      }
      events.push_back(json::parse(line.substr(6)));
    }
    EXPECT_TRUE(done);
    return events;
  }
  // The log-softmax of the last row of `bitdelta logits` for these ids.
  static std::vector<double> reference_logprobs(const std::vector<int32_t>& ids,
                                                const std::string& adapter) {
    std::string list;
    for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
    const fs::path out = *dir_ / "logits.safetensors";
    auto r = testing::run_cli("logits --model " + testing::StoreAssets::get().base().string() +
                              " --ids " + list + " --out " + out.string() +
                              (adapter.empty() ? "" : " --adapter " + adapter));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::vector<float> all = SafetensorsFile::open(out).view("logits").to_f32();
    const size_t V = all.size() / ids.size();
    std::vector<double> row(all.end() - static_cast<std::ptrdiff_t>(V), all.end());
    double max = -INFINITY, sum = 0;
    for (double l : row) max = std::max(max, l);
    for (double l : row) sum += std::exp(l - max);
    for (double& l : row) l -= max + std::log(sum);
    return row;
  }

  static testing::ScratchDir* dir_;
  static ServerProcess* server_;
};
testing::ScratchDir* OpenAiApiTest::dir_ = nullptr;
ServerProcess* OpenAiApiTest::server_ = nullptr;

// Each generated token's logprob and its top alternatives are the log-softmax of the model's own
// logits, as the `logits` command computes them, on the base and with an adapter.
TEST_F(OpenAiApiTest, LogprobsAreTheLogSoftmaxOfTheLogitsCommand) {
  const auto& a = testing::StoreAssets::get();
  const std::string prompt = "Once upon a time";
  json tokenized = post("/tokenize", {{"content", prompt}, {"add_special", true}});
  std::vector<int32_t> prompt_ids = tokenized["tokens"].get<std::vector<int32_t>>();
  ASSERT_FALSE(prompt_ids.empty());
  for (const auto& [model, adapter] : {std::pair<std::string, std::string>{"base", ""},
                                       {"gaming/alice/v1", a.alice_v1().string()}}) {
    SCOPED_TRACE(model);
    json r = post("/v1/completions", {{"model", model},
                                      {"prompt", prompt},
                                      {"max_tokens", 4},
                                      {"temperature", 0},
                                      {"logprobs", 5}});
    const json& lp = r["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 4u) << r.dump();
    std::vector<int32_t> ids = prompt_ids;
    int64_t offset = 0;
    std::string joined;
    for (size_t k = 0; k < 4; ++k) {
      const std::vector<double> ref = reference_logprobs(ids, adapter);
      const int32_t best =
          static_cast<int32_t>(std::max_element(ref.begin(), ref.end()) - ref.begin());
      EXPECT_NEAR(lp["token_logprobs"][k].get<double>(), ref[best], 1e-4) << k;
      // The five alternatives: the five largest reference values, best first.
      std::vector<double> sorted = ref;
      std::sort(sorted.rbegin(), sorted.rend());
      std::vector<double> top;
      for (const auto& [token, value] : lp["top_logprobs"][k].items()) top.push_back(value);
      std::sort(top.rbegin(), top.rend());
      ASSERT_GE(top.size(), 4u);  // two alternatives may share a string
      for (size_t j = 0; j < top.size(); ++j) EXPECT_NEAR(top[j], sorted[j], 1e-4) << k << " " << j;
      EXPECT_EQ(lp["text_offset"][k], offset);
      offset += static_cast<int64_t>(lp["tokens"][k].get<std::string>().size());
      joined += lp["tokens"][k].get<std::string>();
      ids.push_back(best);
    }
    EXPECT_EQ(joined, r["choices"][0]["text"]);
    // The same in chat's shape, streamed or not.
    const json chat = {{"model", model},   {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                       {"max_tokens", 6},  {"temperature", 0},
                       {"logprobs", true}, {"top_logprobs", 3}};
    json whole = post("/v1/chat/completions", chat);
    const json& content = whole["choices"][0]["logprobs"]["content"];
    ASSERT_EQ(content.size(), 6u);
    std::string text;
    for (const json& e : content) {
      ASSERT_EQ(e["top_logprobs"].size(), 3u);
      EXPECT_EQ(e["top_logprobs"][0]["logprob"], e["logprob"]);  // greedy: the best is taken
      EXPECT_GE(e["top_logprobs"][1]["logprob"], e["top_logprobs"][2]["logprob"]);
      std::string bytes;
      for (const json& b : e["bytes"]) bytes += static_cast<char>(b.get<int>());
      EXPECT_EQ(bytes, e["token"]);
      text += e["token"].get<std::string>();
    }
    EXPECT_NE(text.find(whole["choices"][0]["message"]["content"].get<std::string>()),
              std::string::npos);
    json streamed = json::array();
    for (const json& ev : stream("/v1/chat/completions", chat)) {
      const json& c = ev["choices"][0];
      if (c["logprobs"].is_object()) {
        for (const json& e : c["logprobs"]["content"]) streamed.push_back(e);
      }
    }
    EXPECT_EQ(streamed, content);
  }
}

// n choices: one prompt, its own seed stream per choice, usage counting the prompt once.
TEST_F(OpenAiApiTest, NChoicesShareOnePromptEachWithItsOwnSeed) {
  const json request = {{"model", "base"},  {"prompt", "Once upon a time"},
                        {"max_tokens", 12}, {"temperature", 1.0},
                        {"seed", 7},        {"n", 3}};
  json r = post("/v1/completions", request);
  ASSERT_EQ(r["choices"].size(), 3u);
  std::set<std::string> texts;
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    texts.insert(r["choices"][i]["text"].get<std::string>());
    tokens += 12;
  }
  EXPECT_GE(texts.size(), 2u);  // three seeds (this small model often tells the same story)
  EXPECT_EQ(r["usage"]["completion_tokens"], tokens);
  json one = request;
  one["n"] = 1;
  json single = post("/v1/completions", one);
  EXPECT_EQ(r["usage"]["prompt_tokens"], single["usage"]["prompt_tokens"]);
  EXPECT_EQ(single["choices"][0]["text"], r["choices"][0]["text"]);      // choice 0 has the seed
  EXPECT_EQ(post("/v1/completions", request)["choices"], r["choices"]);  // reproducible
  // Streamed: the chunks of each index add up to the same texts.
  std::vector<std::string> streamed(3);
  for (const json& ev : stream("/v1/completions", request)) {
    for (const json& c : ev["choices"]) streamed.at(c["index"].get<size_t>()) += c["text"];
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(streamed[i], r["choices"][i]["text"]) << i;
  // Greedy choices are all the one greedy answer; chat takes n too.
  json chat = post("/v1/chat/completions", {{"model", "gaming/alice/v1"},
                                            {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                            {"max_tokens", 8},
                                            {"temperature", 0},
                                            {"n", 2}});
  ASSERT_EQ(chat["choices"].size(), 2u);
  EXPECT_EQ(chat["choices"][0]["message"], chat["choices"][1]["message"]);
}

TEST_F(OpenAiApiTest, LogitBiasPenaltiesEchoAndUsageChunk) {
  const json base = {{"model", "base"},
                     {"prompt", "Once upon a time"},
                     {"max_tokens", 8},
                     {"temperature", 0},
                     {"logprobs", 0}};
  json plain = post("/v1/completions", base);
  const std::string first = plain["choices"][0]["logprobs"]["tokens"][0];
  // +100 on one token: every token is that one.
  const json dog = post("/tokenize", {{"content", "dog"}, {"with_pieces", true}})["tokens"].back();
  json biased = base;
  biased["logit_bias"] = {{std::to_string(dog["id"].get<int>()), 100}};
  json r = post("/v1/completions", biased);
  for (const json& t : r["choices"][0]["logprobs"]["tokens"]) EXPECT_EQ(t, dog["piece"]);
  // -100 on the greedy first token: another one comes first.
  const std::vector<double> ref = reference_logprobs(
      post("/tokenize", {{"content", "Once upon a time"}, {"add_special", true}})["tokens"], "");
  const auto greedy = std::max_element(ref.begin(), ref.end()) - ref.begin();
  biased["logit_bias"] = {{std::to_string(greedy), -100}};
  EXPECT_NE(post("/v1/completions", biased)["choices"][0]["logprobs"]["tokens"][0], first);
  // A presence penalty of 2 makes a repeating greedy text repeat less.
  json long_base = base;
  long_base["max_tokens"] = 48;
  auto distinct = [](const json& answer) {
    std::set<std::string> s;
    for (const json& t : answer["choices"][0]["logprobs"]["tokens"]) s.insert(t);
    return s.size();
  };
  json penalized = long_base;
  penalized["presence_penalty"] = 2.0;
  penalized["frequency_penalty"] = 2.0;
  EXPECT_GT(distinct(post("/v1/completions", penalized)),
            distinct(post("/v1/completions", long_base)));
  // echo: the prompt comes first.
  json echo = {{"model", "base"},
               {"prompt", "Once upon a time"},
               {"max_tokens", 4},
               {"temperature", 0},
               {"echo", true}};
  const std::string echoed = post("/v1/completions", echo)["choices"][0]["text"];
  EXPECT_EQ(echoed.rfind("Once upon a time", 0), 0u) << echoed;
  EXPECT_GT(echoed.size(), std::string("Once upon a time").size());
  // stream_options.include_usage: a last chunk with no choices and the usage.
  json with_usage = {{"model", "base"},
                     {"prompt", "Once upon a time"},
                     {"max_tokens", 4},
                     {"temperature", 0},
                     {"stream_options", {{"include_usage", true}}}};
  std::vector<json> events = stream("/v1/completions", with_usage);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.back()["choices"].empty());
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 4);
  for (size_t i = 0; i + 1 < events.size(); ++i) EXPECT_FALSE(events[i].contains("usage"));
}

TEST_F(OpenAiApiTest, FieldsNotImplementedAreRefusedByName) {
  const json chat = {
      {"model", "base"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}};
  auto refused = [&](const std::string& path, json body, const std::string& param) {
    json r = post(path, body, 400);
    EXPECT_EQ(r["error"]["param"], param) << r.dump();
    EXPECT_EQ(r["error"]["type"], "invalid_request_error");
    EXPECT_NE(r["error"]["message"].get<std::string>().find(param.substr(0, param.find('['))),
              std::string::npos)
        << r.dump();
  };
  auto with = [](json body, const std::string& key, json value) {
    body[key] = std::move(value);
    return body;
  };
  refused("/v1/chat/completions", with(chat, "no_such_field", 1), "no_such_field");
  refused("/v1/chat/completions", with(chat, "audio", {{"voice", "alloy"}}), "audio");
  refused("/v1/chat/completions", with(chat, "top_logprobs", 21), "top_logprobs");
  refused("/v1/chat/completions", with(with(chat, "logprobs", true), "top_logprobs", 21),
          "top_logprobs");
  refused("/v1/chat/completions", with(chat, "n", 100), "n");
  refused("/v1/chat/completions", with(chat, "store", true), "store");
  refused("/v1/chat/completions", with(chat, "logit_bias", {{"100000", 1}}), "logit_bias");
  refused("/v1/chat/completions",
          with(chat, "messages",
               {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}),
          "messages[0].content[0]");
  const json completion = {{"model", "base"}, {"prompt", "x"}, {"max_tokens", 2}};
  refused("/v1/completions", with(completion, "suffix", "and then"), "suffix");
  refused("/v1/completions", with(completion, "best_of", 3), "best_of");
  refused("/v1/completions", with(completion, "logprobs", 21), "logprobs");
  refused("/v1/completions", with(with(completion, "echo", true), "logprobs", 1), "echo");
  refused("/v1/completions", with(completion, "messages", json::array()), "messages");
  refused("/v1/completions", with(completion, "temperature", 1e300), "temperature");
  // Fields that cannot change the output are accepted (docs/openai-api.md lists them), and so
  // are the no-op values of refused ones.
  post("/v1/chat/completions", with(with(chat, "user", "u-1"), "metadata", {{"k", "v"}}));
  post("/v1/chat/completions",
       with(with(chat, "store", false), "response_format", {{"type", "text"}}));
  post("/v1/chat/completions",
       with(with(chat, "tools", json::array()), "modalities", json::array({"text"})));
  // Content parts of type text are joined, as OpenAI does.
  json parts =
      with(chat, "messages",
           {{{"role", "user"},
             {"content", {{{"type", "text"}, {"text", "H"}}, {{"type", "text"}, {"text", "i"}}}}}});
  parts["temperature"] = 0;
  json joined = chat;
  joined["temperature"] = 0;
  EXPECT_EQ(post("/v1/chat/completions", parts)["choices"],
            post("/v1/chat/completions", joined)["choices"]);
}

TEST_F(OpenAiApiTest, TokenizeDetokenizeAndModelsContextLength) {
  json t = post("/tokenize", {{"content", "Once upon a time"}, {"with_pieces", true}});
  ASSERT_FALSE(t["tokens"].empty());
  std::vector<int32_t> ids;
  std::string pieces;
  for (const json& p : t["tokens"]) {
    ids.push_back(p["id"]);
    pieces += p["piece"].get<std::string>();
  }
  EXPECT_EQ(t["count"], ids.size());
  EXPECT_EQ(post("/detokenize", {{"tokens", ids}})["content"], "Once upon a time");
  EXPECT_EQ(
      post("/tokenize", {{"content", "Once upon a time"}, {"model", "gaming/alice/v1"}})["tokens"],
      post("/tokenize", {{"content", "Once upon a time"}})["tokens"]);
  json bos = post("/tokenize", {{"content", "Once"}, {"add_special", true}});
  EXPECT_GE(bos["tokens"].size(), post("/tokenize", {{"content", "Once"}})["tokens"].size());
  EXPECT_EQ(post("/detokenize", {{"tokens", {100000}}}, 400)["error"]["param"], "tokens");
  EXPECT_EQ(post("/tokenize", {{"text", "x"}}, 400)["error"]["param"], "text");
  post("/tokenize", {{"content", "x"}, {"model", "gaming/nobody/v1"}}, 404);
  auto models = client().Get("/v1/models");
  ASSERT_TRUE(models);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["data"][0]["id"], "base");
  EXPECT_GT(m["data"][0]["context_length"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace bitdelta
