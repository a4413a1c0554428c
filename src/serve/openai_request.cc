#include "serve/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "serve/http_error.h"
#include "util/error.h"
#include "util/python_json.h"

namespace bitdelta {

using json = nlohmann::json;

namespace {

// How the server treats a field of OpenAI's request schema.
enum class Field {
  kUsed,     // read below
  kIgnored,  // accepted, cannot change the output here (documented)
  kRefused,  // 400 unless absent, null or its no-op value (checked below)
};

// The fields both endpoints take, then each one's own.
std::map<std::string_view, Field> shared_fields() {
  return {
      {"model", Field::kUsed},
      {"max_tokens", Field::kUsed},
      {"temperature", Field::kUsed},
      {"top_p", Field::kUsed},
      {"seed", Field::kUsed},
      {"stop", Field::kUsed},
      {"stream", Field::kUsed},
      {"stream_options", Field::kUsed},
      {"n", Field::kUsed},
      {"logprobs", Field::kUsed},
      {"frequency_penalty", Field::kUsed},
      {"presence_penalty", Field::kUsed},
      {"logit_bias", Field::kUsed},
      {"user", Field::kIgnored},
      // Extensions that llama.cpp's server and vLLM take too.
      {"top_k", Field::kUsed},
      {"min_p", Field::kUsed},
      {"repetition_penalty", Field::kUsed},
  };
}

const std::map<std::string_view, Field>& chat_fields() {
  static const std::map<std::string_view, Field> fields = [] {
    auto f = shared_fields();
    f.insert({
        {"messages", Field::kUsed},
        {"max_completion_tokens", Field::kUsed},
        {"top_logprobs", Field::kUsed},
        {"response_format", Field::kUsed},
        {"tools", Field::kUsed},
        {"tool_choice", Field::kUsed},
        {"parallel_tool_calls", Field::kUsed},
        {"functions", Field::kRefused},
        {"function_call", Field::kRefused},
        {"audio", Field::kRefused},
        {"modalities", Field::kRefused},
        {"prediction", Field::kRefused},
        {"reasoning_effort", Field::kRefused},
        {"web_search_options", Field::kRefused},
        {"verbosity", Field::kRefused},
        {"store", Field::kRefused},
        {"service_tier", Field::kIgnored},
        {"metadata", Field::kIgnored},
        {"safety_identifier", Field::kIgnored},
        {"prompt_cache_key", Field::kIgnored},
    });
    return f;
  }();
  return fields;
}

const std::map<std::string_view, Field>& completion_fields() {
  static const std::map<std::string_view, Field> fields = [] {
    auto f = shared_fields();
    f.insert({
        {"prompt", Field::kUsed},
        {"best_of", Field::kUsed},
        {"echo", Field::kUsed},
        {"suffix", Field::kRefused},
    });
    return f;
  }();
  return fields;
}

// Field readers: null is the same as absent, as OpenAI treats it.
const json* find(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = find(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer() && !v->is_number_unsigned()) {
    field_fail(name, fmt::format("'{}' must be an integer between {} and {}", name, lo, hi));
  }
  if (v->is_number_unsigned() ? v->get<uint64_t>() > static_cast<uint64_t>(hi)
                              : v->get<int64_t>() < lo || v->get<int64_t>() > hi) {
    field_fail(name,
               fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, v->dump()));
  }
  return v->get<int64_t>();
}

std::optional<double> number(const json& body, const char* name, double lo, double hi) {
  const json* v = find(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>())) {
    field_fail(name, fmt::format("'{}' must be a number between {} and {}", name, lo, hi));
  }
  const double x = v->get<double>();
  if (x < lo || x > hi) {
    field_fail(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, x));
  }
  return x;
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = find(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) field_fail(name, fmt::format("'{}' must be true or false", name));
  return v->get<bool>();
}

[[noreturn]] void refuse(const std::string& name, std::string_view why) {
  field_fail(name, fmt::format("'{}' is not supported by this server: {}", name, why),
             "unsupported_parameter");
}

// A refused field passes only when it asks for nothing: absent, null, or its no-op value.
void check_refused(const json& body, const std::string& name) {
  const json& v = body[name];
  if (v.is_null()) return;
  if (name == "modalities" && v == json::array({"text"})) return;
  if (name == "store" && v == false) return;
  if (name == "suffix" && v == "") return;
  if (name == "functions" || name == "function_call") {
    refuse(name,
           "the deprecated function-calling fields are not implemented; use 'tools' and "
           "'tool_choice'");
  }
  if (name == "audio" || name == "modalities") refuse(name, "only text output");
  if (name == "store") refuse(name, "completions are not stored; send false or leave it out");
  if (name == "suffix") refuse(name, "insertion (text after the completion) is not supported");
  if (name == "prediction") refuse(name, "predicted outputs are not supported");
  if (name == "reasoning_effort") {
    refuse(name, "reasoning effort is not adjustable on these models");
  }
  if (name == "web_search_options") refuse(name, "there is no web search");
  if (name == "verbosity") refuse(name, "verbosity is not adjustable");
  refuse(name, "not implemented");
}

std::vector<std::string> stop_strings(const json& body) {
  std::vector<std::string> out;
  const json* it = find(body, "stop");
  if (it == nullptr) return out;
  auto add = [&](const json& v) {
    if (!v.is_string() || v.get<std::string>().empty()) {
      field_fail("stop", "'stop' must be a non-empty string or a list of up to 4 of them");
    }
    out.push_back(v.get<std::string>());
  };
  if (it->is_array()) {
    if (it->size() > 4) field_fail("stop", "'stop' may hold at most 4 strings");
    for (const json& v : *it) add(v);
  } else {
    add(*it);
  }
  return out;
}

// A message's content: a string, or a list of text parts (OpenAI's content parts).
std::string content_text(const json& content, size_t index) {
  const std::string where = fmt::format("messages[{}].content", index);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) field_fail(where, where + " must be a string or a list of text parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string type = part.is_object() ? part.value("type", "") : "";
    if (type != "text" || !part.contains("text") || !part["text"].is_string()) {
      field_fail(fmt::format("{}[{}]", where, j),
                 fmt::format("{}[{}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                             "are supported{}",
                             where, j, type.empty() ? "" : fmt::format(", not '{}'", type)));
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> chat_messages(const json& body) {
  const json* it = find(body, "messages");
  if (it == nullptr || !it->is_array() || it->empty()) {
    field_fail("messages", "'messages' must be a non-empty list of {role, content}");
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      field_fail(where, where + " needs a string 'role'");
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for system messages
    if (role == "function") {
      field_fail(where + ".role", "the deprecated 'function' role is not supported; use 'tool'");
    }
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      field_fail(where + ".role", fmt::format("{}.role '{}' is not one of system, developer, "
                                              "user, assistant, tool",
                                              where, role));
    }
    for (const auto& [key, value] : m.items()) {
      if (key == "role" || key == "content" || key == "name" || key == "reasoning_content" ||
          value.is_null()) {
        continue;
      }
      if ((key == "tool_calls" && role == "assistant") ||
          (key == "tool_call_id" && role == "tool")) {
        continue;
      }
      if (key == "function_call" || key == "refusal" || key == "audio") {
        field_fail(where + "." + key, fmt::format("{}.{} is not supported", where, key));
      }
      field_fail(where + "." + key,
                 fmt::format("unrecognized field '{}' in a {} message ({})", key, role, where));
    }
    ChatMessage msg{role, "", ""};
    if (const json* calls = find(m, "tool_calls")) {
      if (!calls->is_array()) field_fail(where + ".tool_calls", "'tool_calls' must be a list");
      for (size_t k = 0; k < calls->size(); ++k) {
        const json& c = (*calls)[k];
        const std::string at = fmt::format("{}.tool_calls[{}]", where, k);
        if (!c.is_object() || c.value("type", "function") != "function" ||
            !c.contains("function") || !c["function"].is_object() ||
            !c["function"].contains("name") || !c["function"]["name"].is_string() ||
            !c["function"].contains("arguments") || !c["function"]["arguments"].is_string()) {
          field_fail(at, at + " must be {\"id\", \"type\": \"function\", \"function\": "
                              "{\"name\", \"arguments\": JSON text}}");
        }
        const std::string arguments = c["function"]["arguments"].get<std::string>();
        if (json::parse(arguments, nullptr, false).is_discarded()) {
          field_fail(at + ".function.arguments", at + ".function.arguments is not JSON text");
        }
        msg.tool_calls.push_back(
            {c.value("id", ""), c["function"]["name"].get<std::string>(), arguments});
      }
    }
    if (role == "tool") {
      const json* id = find(m, "tool_call_id");
      if (id == nullptr || !id->is_string()) {
        field_fail(where + ".tool_call_id", where + " (a tool result) needs 'tool_call_id'");
      }
      msg.tool_call_id = id->get<std::string>();
    }
    const json* content = find(m, "content");
    if (content == nullptr && msg.tool_calls.empty()) {
      field_fail(where + ".content", where + " needs 'content'");
    }
    if (content != nullptr) msg.content = content_text(*content, i);
    if (const json* r = find(m, "reasoning_content")) {
      if (!r->is_string()) {
        field_fail(where + ".reasoning_content", "'reasoning_content' must be a string");
      }
      msg.reasoning_content = r->get<std::string>();
    }
    messages.push_back(std::move(msg));
  }
  return messages;
}

// tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]
std::vector<ToolSpec> tool_specs(const nlohmann::ordered_json& body) {
  std::vector<ToolSpec> tools;
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return tools;
  if (!it->is_array()) field_fail("tools", "'tools' must be a list of functions");
  if (it->size() > 128) field_fail("tools", "'tools' may hold at most 128 functions");
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    const std::string where = fmt::format("tools[{}]", i);
    if (!t.is_object() || t.value("type", "") != "function" || !t.contains("function") ||
        !t["function"].is_object()) {
      field_fail(where, where + " must be {\"type\": \"function\", \"function\": {...}}");
    }
    const auto& f = t["function"];
    for (const auto& [key, value] : f.items()) {
      if (key != "name" && key != "description" && key != "parameters" && key != "strict") {
        field_fail(where + ".function." + key,
                   fmt::format("unrecognized field '{}' in {}.function", key, where));
      }
    }
    ToolSpec spec;
    if (!f.contains("name") || !f["name"].is_string()) {
      field_fail(where + ".function.name", where + ".function needs a 'name'");
    }
    spec.name = f["name"].get<std::string>();
    const bool valid_name =
        !spec.name.empty() && spec.name.size() <= 64 &&
        std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    if (!valid_name) {
      field_fail(where + ".function.name",
                 fmt::format("{}.function.name '{}' must be 1 to 64 letters, digits, _ or -", where,
                             spec.name));
    }
    for (const ToolSpec& other : tools) {
      if (other.name == spec.name) {
        field_fail(where + ".function.name", fmt::format("two tools are named '{}'", spec.name));
      }
    }
    if (f.contains("description") && !f["description"].is_string()) {
      field_fail(where + ".function.description", "a tool's description must be a string");
    }
    if (f.contains("parameters") && !f["parameters"].is_null()) {
      if (!f["parameters"].is_object()) {
        field_fail(where + ".function.parameters",
                   where + ".function.parameters must be a JSON Schema object");
      }
      spec.parameters = f["parameters"];
    } else {
      spec.parameters = {{"type", "object"}, {"properties", nlohmann::ordered_json::object()}};
    }
    spec.rendered = python_json_dumps(t);
    tools.push_back(std::move(spec));
  }
  return tools;
}

ToolChoice tool_choice(const json& body, const std::vector<ToolSpec>& tools) {
  ToolChoice choice;
  choice.mode = tools.empty() ? ToolChoice::Mode::kNone : ToolChoice::Mode::kAuto;
  const json* v = find(body, "tool_choice");
  if (v == nullptr) return choice;
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s == "none")
      choice.mode = ToolChoice::Mode::kNone;
    else if (s == "auto")
      choice.mode = ToolChoice::Mode::kAuto;
    else if (s == "required")
      choice.mode = ToolChoice::Mode::kRequired;
    else
      field_fail("tool_choice", fmt::format("tool_choice '{}' is not none, auto or required", s));
  } else if (v->is_object() && v->value("type", "") == "function" && v->contains("function") &&
             (*v)["function"].is_object() && (*v)["function"].contains("name") &&
             (*v)["function"]["name"].is_string()) {
    choice.mode = ToolChoice::Mode::kNamed;
    choice.name = (*v)["function"]["name"].get<std::string>();
    if (std::none_of(tools.begin(), tools.end(),
                     [&](const ToolSpec& t) { return t.name == choice.name; })) {
      field_fail("tool_choice",
                 fmt::format("tool_choice names '{}', which is not in 'tools'", choice.name));
    }
  } else {
    field_fail("tool_choice",
               "'tool_choice' must be \"none\", \"auto\", \"required\" or "
               "{\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  if (tools.empty() && choice.mode != ToolChoice::Mode::kNone) {
    field_fail("tool_choice", "'tool_choice' needs 'tools' to choose from");
  }
  return choice;
}

ResponseFormat response_format(const nlohmann::ordered_json& body) {
  ResponseFormat format;
  auto it = body.find("response_format");
  if (it == body.end() || it->is_null()) return format;
  const std::string type = it->is_object() ? it->value("type", "") : "";
  if (type == "text") return format;
  if (type == "json_object") {
    format.type = ResponseFormat::Type::kJsonObject;
    return format;
  }
  if (type != "json_schema") {
    field_fail("response_format",
               "'response_format' must be {\"type\": \"text\"}, "
               "{\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
               "\"json_schema\": {\"name\", \"schema\", \"strict\"}}");
  }
  auto js = it->find("json_schema");
  if (js == it->end() || !js->is_object() || !js->contains("name") || !(*js)["name"].is_string()) {
    field_fail("response_format", "response_format.json_schema needs a 'name' and a 'schema'");
  }
  for (const auto& [key, value] : js->items()) {
    if (key != "name" && key != "schema" && key != "strict" && key != "description") {
      field_fail("response_format",
                 fmt::format("unrecognized field '{}' in response_format.json_schema", key));
    }
  }
  format.type = ResponseFormat::Type::kJsonSchema;
  format.schema = js->value("schema", nlohmann::ordered_json::object());
  if (!format.schema.is_object()) {
    field_fail("response_format",
               "response_format.json_schema.schema must be a JSON Schema object");
  }
  return format;
}

}  // namespace

const std::vector<std::string_view>& ignored_openai_fields(bool chat) {
  static const auto list = [](const std::map<std::string_view, Field>& fields) {
    std::vector<std::string_view> out;
    for (const auto& [name, kind] : fields) {
      if (kind == Field::kIgnored) out.push_back(name);
    }
    return out;
  };
  static const std::vector<std::string_view> chat_list = list(chat_fields());
  static const std::vector<std::string_view> completion_list = list(completion_fields());
  return chat ? chat_list : completion_list;
}

OpenAiRequest parse_openai_request(const json& body, const nlohmann::ordered_json& ordered,
                                   bool chat, const OpenAiLimits& limits) {
  const auto& fields = chat ? chat_fields() : completion_fields();
  for (const auto& [name, value] : body.items()) {
    auto it = fields.find(name);
    if (it == fields.end()) {
      field_fail(name, fmt::format("Unrecognized request argument supplied: {}", name),
                 "unknown_parameter");
    }
    if (it->second == Field::kRefused) check_refused(body, name);
  }
  OpenAiRequest r;
  r.chat = chat;
  const json* model = find(body, "model");
  if (model == nullptr || !model->is_string()) {
    field_fail("model", "'model' is required: the base model or an adapter id");
  }
  r.model = model->get<std::string>();
  if (chat) {
    r.messages = chat_messages(body);
  } else {
    const json* p = find(body, "prompt");
    if (p != nullptr && p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p != nullptr && p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
      r.prompt = (*p)[0].get<std::string>();
    } else {
      field_fail("prompt", "'prompt' must be a string (or a list of one string)");
    }
  }
  GenerateOptions& opt = r.options;
  opt.max_tokens = -1;
  if (auto v = integer(body, "max_tokens", 0, limits.max_tokens)) opt.max_tokens = *v;
  if (chat) {
    if (auto v = integer(body, "max_completion_tokens", 0, limits.max_tokens)) opt.max_tokens = *v;
  }
  SamplingParams& sp = opt.sampling;
  sp.temperature = static_cast<float>(number(body, "temperature", 0, 2).value_or(1.0));
  sp.top_p = static_cast<float>(number(body, "top_p", 0, 1).value_or(1.0));
  if (sp.top_p <= 0) field_fail("top_p", "'top_p' must be greater than 0 and at most 1");
  sp.top_k = static_cast<int>(integer(body, "top_k", 0, 1'000'000).value_or(0));
  sp.min_p = static_cast<float>(number(body, "min_p", 0, 1).value_or(0.0));
  sp.repetition_penalty =
      static_cast<float>(number(body, "repetition_penalty", 0.01, 100).value_or(1.0));
  sp.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", -2, 2).value_or(0));
  sp.presence_penalty = static_cast<float>(number(body, "presence_penalty", -2, 2).value_or(0));
  if (auto seed = integer(body, "seed", std::numeric_limits<int64_t>::min(),
                          std::numeric_limits<int64_t>::max())) {
    sp.seed = static_cast<uint64_t>(*seed);
  } else {
    sp.seed = std::random_device{}();
  }
  if (const json* bias = find(body, "logit_bias")) {
    if (!bias->is_object()) {
      field_fail("logit_bias",
                 "'logit_bias' must map token ids (as strings) to a bias in "
                 "[-100, 100]");
    }
    for (const auto& [key, value] : bias->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0 || id >= limits.vocab_size) {
        field_fail("logit_bias", fmt::format("logit_bias: '{}' is not a token id of this model "
                                             "(0 to {})",
                                             key, limits.vocab_size - 1));
      }
      if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
        field_fail(
            "logit_bias",
            fmt::format("logit_bias: the bias of token {} must be a number in [-100, 100]", key));
      }
      sp.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
    }
  }
  opt.stop_strings = stop_strings(body);
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = find(body, "stream_options")) {
    if (!so->is_object()) field_fail("stream_options", "'stream_options' must be an object");
    if (!r.stream) {
      field_fail("stream_options", "'stream_options' is only allowed when 'stream' is true");
    }
    for (const auto& [key, value] : so->items()) {
      if (key != "include_usage" && key != "include_obfuscation") {
        field_fail(
            "stream_options." + key,
            fmt::format("unrecognized stream option '{}' (include_usage is supported)", key));
      }
    }
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }
  r.n = static_cast<int>(integer(body, "n", 1, limits.max_n).value_or(1));
  if (chat) {
    const bool logprobs = boolean(body, "logprobs").value_or(false);
    const auto top = integer(body, "top_logprobs", 0, kMaxTopLogprobs);
    if (top && !logprobs) {
      field_fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    if (logprobs) opt.logprobs = static_cast<int>(top.value_or(0));
  } else {
    if (auto v = integer(body, "logprobs", 0, kMaxTopLogprobs)) opt.logprobs = static_cast<int>(*v);
    r.echo = boolean(body, "echo").value_or(false);
    if (r.echo && opt.logprobs >= 0) {
      field_fail("echo",
                 "'echo' with 'logprobs' would need the prompt tokens' log "
                 "probabilities, which are not computed; drop one of them");
    }
    if (auto best_of = integer(body, "best_of", 1, limits.max_n); best_of && *best_of != r.n) {
      field_fail("best_of",
                 "'best_of' other than n (ranking candidates server-side) is not "
                 "supported; leave it out or set it to n");
    }
  }
  if (chat) {
    r.tools = tool_specs(ordered);
    r.tool_choice = tool_choice(body, r.tools);
    r.parallel_tool_calls = boolean(body, "parallel_tool_calls").value_or(true);
    r.response_format = response_format(ordered);
    if (r.response_format.type != ResponseFormat::Type::kText &&
        r.tool_choice.mode != ToolChoice::Mode::kNone) {
      field_fail("response_format",
                 "tool calls and a response_format cannot both shape the output; drop one, or "
                 "send tool_choice \"none\"");
    }
  }
  try {
    validate(sp);
  } catch (const Error& e) {
    field_fail("", e.what());
  }
  return r;
}

}  // namespace bitdelta
