// Structured output and tool calls on a real `bitdelta serve` process, on a tiny Qwen3 with the
// real Qwen3 vocabulary and chat template (random weights, so every constraint is exercised on
// text no grammar-free model would write): response_format json_schema / json_object outputs
// parse and validate (Debian's python3-jsonschema, tests/constrain/validate_json.py) while they
// share the batch with free requests and with a user's adapter; tool calls, forced, automatic
// and streamed, and tool results sent back; clear 400s for what the grammar cannot express.
#include <gtest/gtest.h>
#include <httplib.h>

#include <future>
#include <nlohmann/json.hpp>
#include <sstream>

#include "delta/delta_test_util.h"
#include "serve/server_process.h"
#include "support/test_support.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr int kToolCallToken = 151657;  // Qwen3's <tool_call>

class StructuredOutputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    const fs::path base = *dir_ / "tq";
    SynthOptions so;
    so.like = "tiny";
    so.tokenizer_dir = testing::shared_asset("tokenizers/qwen3");
    so.vocab_size = 151936;
    synth_model(so, base);
    testing::make_finetune(base, *dir_ / "ft", 5, 0.3f, [](const std::string& name) {
      return name.find("layers.") != std::string::npos;
    });
    auto r = testing::run_cli("compress --base " + base.string() + " --finetuned " +
                              (*dir_ / "ft").string() + " --out " + (*dir_ / "a.bdelta").string() +
                              " --adapter-id general/ana/v1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = testing::run_cli("store add --store " + (*dir_ / "store").string() + " " +
                         (*dir_ / "a.bdelta").string() + " --model " + base.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    server_ = new ServerProcess(
        "--model " + base.string() + " --store " + (*dir_ / "store").string() + " --max-batch 8",
        *dir_ / "server.log");
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  static json post(const json& body, int expect = 200) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(120, 0);
    auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, expect) << body.dump() << " -> " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  static std::vector<json> stream(json body) {
    body["stream"] = true;
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(120, 0);
    auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200);
    std::vector<json> events;
    std::istringstream lines(res ? res->body : "");
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("data: {", 0) == 0) events.push_back(json::parse(line.substr(6)));
    }
    return events;
  }
  static json chat(const std::string& model, const std::string& text, int seed) {
    return {{"model", model},
            {"messages", {{{"role", "user"}, {"content", text}}}},
            {"max_tokens", 160},
            {"temperature", 1.0},
            {"seed", seed}};
  }
  // validate_json.py over (schema, document) pairs; "" when every document is valid.
  static std::string validate(const std::vector<ojson>& schemas,
                              const std::vector<std::pair<size_t, std::string>>& docs) {
    const fs::path s = *dir_ / "schemas.json", d = *dir_ / "docs.jsonl";
    testing::write_text(s, ojson(schemas).dump());
    std::string lines;
    for (const auto& [i, doc] : docs) lines += json{{"schema", i}, {"doc", doc}}.dump() + "\n";
    testing::write_text(d, lines);
    auto r = testing::run_command(
        "/usr/bin/python3 " + testing::source_path("tests/constrain/validate_json.py").string() +
        " " + s.string() + " " + d.string());
    return r.exit_code == 0 ? "" : r.out + r.err;
  }

  static testing::ScratchDir* dir_;
  static ServerProcess* server_;
};
testing::ScratchDir* StructuredOutputTest::dir_ = nullptr;
ServerProcess* StructuredOutputTest::server_ = nullptr;

const std::vector<ojson>& schemas() {
  static const std::vector<ojson> s = {
      ojson::parse(R"({"type": "object", "properties": {
          "name": {"type": "string", "maxLength": 12},
          "age": {"type": "integer", "minimum": 0, "maximum": 120},
          "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]},
                   "minItems": 1, "maxItems": 3}},
        "required": ["name", "age", "tags"], "additionalProperties": false})"),
      ojson::parse(R"({"type": "object", "properties": {
          "point": {"type": "object", "properties": {
              "x": {"type": "number", "minimum": -1.5, "maximum": 2.25},
              "y": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
            "required": ["x", "y"], "additionalProperties": false},
          "label": {"type": ["string", "null"], "maxLength": 8},
          "ok": {"type": "boolean"}},
        "required": ["point", "ok"], "additionalProperties": false})"),
      ojson::parse(R"({"type": "array", "items": {"anyOf": [
          {"type": "integer", "minimum": 10, "maximum": 99},
          {"const": "none"}]}, "minItems": 2, "maxItems": 4})"),
      ojson::parse(R"({"type": "object", "properties": {
          "kind": {"enum": ["buy", "sell", 3, null]},
          "amount": {"type": "number", "minimum": 0}},
        "required": ["kind"], "additionalProperties": false})"),
  };
  return s;
}

// Many constrained requests at once, on the base and on a user's adapter, sharing forwards with
// unconstrained ones: every document parses and validates, and the free requests answer exactly
// what they answer alone (a mask is one sequence's own).
TEST_F(StructuredOutputTest, JsonSchemaOutputsValidateInAMixedBatch) {
  const json free_request = chat("tq", "Tell me about the weather", 3);
  const json alone = post(free_request)["choices"][0]["message"];
  std::vector<std::future<json>> answers;
  std::vector<size_t> which;
  for (size_t i = 0; i < schemas().size(); ++i) {
    for (int seed = 0; seed < 4; ++seed) {
      json body = chat(seed % 2 ? "general/ana/v1" : "tq", "Give me JSON", seed);
      body["response_format"] = {
          {"type", "json_schema"},
          {"json_schema",
           {{"name", "s"}, {"schema", json::parse(schemas()[i].dump())}, {"strict", true}}}};
      // The schema's own key order must survive the trip; send the ordered text.
      std::string text = body.dump();
      const std::string sorted = json::parse(schemas()[i].dump()).dump();
      text.replace(text.find(sorted), sorted.size(), schemas()[i].dump());
      answers.push_back(std::async(std::launch::async, [text] {
        httplib::Client c("127.0.0.1", server_->port());
        c.set_read_timeout(120, 0);
        auto res = c.Post("/v1/chat/completions", text, "application/json");
        return res && res->status == 200 ? json::parse(res->body)
                                         : json{{"failed", res ? res->body : "no answer"}};
      }));
      which.push_back(i);
    }
  }
  auto free_answer = std::async(std::launch::async, [&] { return post(free_request); });
  std::vector<std::pair<size_t, std::string>> docs;
  int finished = 0;
  for (size_t k = 0; k < answers.size(); ++k) {
    const json r = answers[k].get();
    ASSERT_FALSE(r.contains("failed")) << r.dump();
    const json& choice = r["choices"][0];
    if (choice["finish_reason"] != "stop") continue;  // cut by max_tokens: not a whole document
    ++finished;
    docs.emplace_back(which[k], choice["message"]["content"].get<std::string>());
  }
  EXPECT_GE(finished, 12) << "of " << answers.size();
  EXPECT_EQ(validate(schemas(), docs), "");
  EXPECT_EQ(free_answer.get()["choices"][0]["message"], alone);
  // JSON mode: any object.
  json object_mode = chat("tq", "JSON please", 9);
  object_mode["response_format"] = {{"type", "json_object"}};
  const json r = post(object_mode);
  if (r["choices"][0]["finish_reason"] == "stop") {
    EXPECT_TRUE(json::parse(r["choices"][0]["message"]["content"].get<std::string>()).is_object());
  }
}

const json& weather_tool() {
  static const json t = json::parse(R"({"type": "function", "function": {
      "name": "get_weather", "description": "Weather in a city",
      "parameters": {"type": "object", "properties": {
          "city": {"type": "string", "maxLength": 12},
          "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"], "additionalProperties": false}}})");
  return t;
}

const json& search_tool() {
  static const json t = json::parse(R"({"type": "function", "function": {
      "name": "search", "parameters": {"type": "object", "properties": {
          "query": {"type": "string", "maxLength": 10}}, "required": ["query"],
        "additionalProperties": false}}})");
  return t;
}

TEST_F(StructuredOutputTest, ToolCallsForcedAutomaticStreamedAndAnswered) {
  std::vector<ojson> params = {ojson::parse(weather_tool()["function"]["parameters"].dump()),
                               ojson::parse(search_tool()["function"]["parameters"].dump())};
  std::vector<std::pair<size_t, std::string>> args;
  // A named function: its call, with arguments valid against its parameters.
  json named = chat("tq", "Weather in Paris?", 1);
  named["tools"] = {weather_tool(), search_tool()};
  named["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
  const json r = post(named);
  const json& message = r["choices"][0]["message"];
  ASSERT_EQ(r["choices"][0]["finish_reason"], "tool_calls") << r.dump();
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_TRUE(message["content"].is_null());
  const json& call = message["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
  args.emplace_back(0, call["function"]["arguments"].get<std::string>());
  // Streamed: the first delta names the call, the rest are pieces of its arguments.
  std::string streamed_args, name, finish;
  for (const json& ev : stream(named)) {
    const json& c = ev["choices"][0];
    if (c["finish_reason"].is_string()) finish = c["finish_reason"];
    if (!c["delta"].contains("tool_calls")) continue;
    const json& d = c["delta"]["tool_calls"][0];
    EXPECT_EQ(d["index"], 0);
    if (d.contains("id")) name = d["function"]["name"];
    streamed_args += d["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(streamed_args, call["function"]["arguments"]);  // the same seed, the same call
  EXPECT_EQ(finish, "tool_calls");
  // "required" with two tools: a call to one of them; on the adapter as well.
  for (int seed = 0; seed < 4; ++seed) {
    json required = chat(seed % 2 ? "general/ana/v1" : "tq", "Do something", seed);
    required["tools"] = {weather_tool(), search_tool()};
    required["tool_choice"] = "required";
    const json c = post(required)["choices"][0];
    ASSERT_EQ(c["finish_reason"], "tool_calls") << c.dump();
    const std::string fn = c["message"]["tool_calls"][0]["function"]["name"];
    args.emplace_back(fn == "get_weather" ? 0 : 1,
                      c["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>());
  }
  // "auto": the model opens a call with <tool_call> (pushed here with logit_bias, as this
  // random model would not), and the grammar takes over until the call is closed.
  json automatic = chat("tq", "Weather?", 2);
  automatic["tools"] = {weather_tool()};
  automatic["logit_bias"] = {{std::to_string(kToolCallToken), 100}};
  automatic["parallel_tool_calls"] = false;
  const json a = post(automatic)["choices"][0];
  ASSERT_EQ(a["finish_reason"], "tool_calls") << a.dump();
  ASSERT_EQ(a["message"]["tool_calls"].size(), 1u);  // no parallel calls: the end follows
  args.emplace_back(0, a["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_EQ(validate(params, args), "");
  // "none": the opening token is never taken, however much it is pushed.
  automatic["tool_choice"] = "none";
  const json none = post(automatic)["choices"][0];
  EXPECT_FALSE(none["message"].contains("tool_calls"));
  EXPECT_EQ(none["message"]["content"].get<std::string>().find("<tool_call>"), std::string::npos);
  // The call and its result go back to the model, which answers.
  json round_trip = chat("tq", "Weather in Paris?", 4);
  round_trip["tools"] = {weather_tool()};
  round_trip["messages"].push_back(message);
  round_trip["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "18 C, sunny"}});
  round_trip["tool_choice"] = "none";
  round_trip["max_tokens"] = 8;
  EXPECT_EQ(post(round_trip)["choices"][0]["finish_reason"], "length");
}

TEST_F(StructuredOutputTest, WhatTheGrammarCannotExpressIsA400) {
  json body = chat("tq", "x", 1);
  body["response_format"] = {
      {"type", "json_schema"},
      {"json_schema", {{"name", "s"}, {"schema", {{"type", "string"}, {"pattern", "^a+$"}}}}}};
  json r = post(body, 400);
  EXPECT_EQ(r["error"]["param"], "response_format");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("pattern"), std::string::npos) << r;
  body.erase("response_format");
  json bad_tool = weather_tool();
  bad_tool["function"]["parameters"]["properties"]["city"]["format"] = "email";
  body["tools"] = {bad_tool};
  r = post(body, 400);
  EXPECT_EQ(r["error"]["param"], "tools");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("tools[0].function.parameters"),
            std::string::npos)
      << r;
  body["tools"] = {weather_tool()};
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "nope"}}}};
  EXPECT_EQ(post(body, 400)["error"]["param"], "tool_choice");
  body["tool_choice"] = "required";
  body["response_format"] = {{"type", "json_object"}};
  EXPECT_EQ(post(body, 400)["error"]["param"], "response_format");
  body["tool_choice"] = "auto";  // both would shape the output: refused, not half ignored
  EXPECT_EQ(post(body, 400)["error"]["param"], "response_format");
  body.erase("response_format");
  body["tools"] = {weather_tool(), weather_tool()};
  EXPECT_EQ(post(body, 400)["error"]["param"], "tools[1].function.name");
}

// Llama 3.1's tool calls: the whole reply is {"name", "parameters"}; forced calls follow the
// grammar from the first token, tool results go back as "ipython" turns, and the template's one
// call per assistant turn is enforced.
TEST_F(StructuredOutputTest, Llama31ToolCalls) {
  const fs::path model = *dir_ / "tl";
  SynthOptions so;
  so.like = "tiny-llama";
  synth_model(so, model);
  const auto fixtures =
      json::parse(testing::read_text(testing::test_data("tokenizer/chat_templates.json")));
  testing::write_text(model / "chat_template.jinja",
                      fixtures["templates"]["llama31"]["source"].get<std::string>());
  ServerProcess llama("--model " + model.string() + " --store " + (*dir_ / "tl-store").string(),
                      *dir_ / "tl.log");
  httplib::Client c("127.0.0.1", llama.port());
  c.set_read_timeout(120, 0);
  auto call = [&](const json& body, int expect = 200) {
    auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return json();
    EXPECT_EQ(res->status, expect) << body.dump() << " -> " << res->body;
    return json::parse(res->body, nullptr, false);
  };
  std::vector<ojson> params = {ojson::parse(weather_tool()["function"]["parameters"].dump())};
  std::vector<std::pair<size_t, std::string>> args;
  for (int seed = 0; seed < 3; ++seed) {
    json named = chat("tl", "Weather in Paris?", seed);
    named["tools"] = {weather_tool(), search_tool()};
    named["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
    const json r = call(named);
    ASSERT_EQ(r["choices"][0]["finish_reason"], "tool_calls") << r.dump();
    const json& tc = r["choices"][0]["message"]["tool_calls"];
    ASSERT_EQ(tc.size(), 1u);
    EXPECT_EQ(tc[0]["function"]["name"], "get_weather");
    args.emplace_back(0, tc[0]["function"]["arguments"].get<std::string>());
  }
  EXPECT_EQ(validate(params, args), "");
  // "auto": a free reply; whatever it is, the answer is well-formed.
  json automatic = chat("tl", "Weather?", 7);
  automatic["tools"] = {weather_tool()};
  automatic["max_tokens"] = 24;
  const json a = call(automatic)["choices"][0];
  EXPECT_TRUE(a["message"].contains("content"));
  // The call and its result back; two calls in one turn are more than the template allows.
  json history = chat("tl", "Weather in Paris?", 4);
  history["tools"] = {weather_tool()};
  history["messages"].push_back(
      {{"role", "assistant"},
       {"content", nullptr},
       {"tool_calls",
        {{{"id", "c1"},
          {"type", "function"},
          {"function", {{"name", "get_weather"}, {"arguments", args[0].second}}}}}}});
  history["messages"].push_back({{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "18 C"}});
  history["max_tokens"] = 4;
  history["tool_choice"] = "none";
  EXPECT_EQ(call(history)["choices"][0]["finish_reason"], "length");
  history["messages"][1]["tool_calls"].push_back(history["messages"][1]["tool_calls"][0]);
  EXPECT_EQ(call(history, 400)["error"]["param"], "messages");
}

}  // namespace
}  // namespace bitdelta
