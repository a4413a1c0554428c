#include "tokenizer/chat_template.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "tokenizer/unicode_util.h"
#include "util/error.h"
#include "util/python_json.h"

namespace bitdelta {

namespace {

constexpr const char* kSupported =
    "Qwen3, ChatML (Qwen2/Qwen2.5), Llama-3.0 and Llama-3.1 Instruct, Llama-2-chat, "
    "Mistral-Instruct v0.1/v0.2";

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Python's str.isspace() for one code point.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Python's str.strip() (Jinja's `trim` and `.strip()`), on UTF-8.
std::string py_strip(std::string_view s) {
  auto decode = [&](size_t i, size_t& len) -> char32_t {
    utf8proc_int32_t cp = 0;
    auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                              utf8proc_ssize_t(s.size() - i), &cp);
    len = n > 0 ? size_t(n) : 1;
    return n > 0 ? char32_t(cp) : 0xFFFD;
  };
  size_t begin = 0, len = 0;
  while (begin < s.size() && py_space(decode(begin, len))) begin += len;
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
    if (!py_space(decode(start, len))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

// Python's str.strip/lstrip/rstrip with an argument, for the single character '\n'.
std::string strip_newlines(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && s[b] == '\n') ++b;
  }
  if (right) {
    while (e > b && s[e - 1] == '\n') --e;
  }
  return std::string(s.substr(b, e - b));
}

// Python's s.split(sep)[0] and s.split(sep)[-1].
std::string_view before_first(std::string_view s, std::string_view sep) {
  return s.substr(0, std::min(s.find(sep), s.size()));
}
std::string_view after_last(std::string_view s, std::string_view sep) {
  size_t pos = s.rfind(sep);
  return pos == std::string_view::npos ? s : s.substr(pos + sep.size());
}

void check_roles(const std::vector<ChatMessage>& messages, std::string_view name, bool tools) {
  if (messages.empty()) fail("cannot render an empty conversation with the {} template", name);
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "tool" && tools) continue;
    if (role != "system" && role != "user" && role != "assistant") {
      fail(
          "message {} has role \"{}\": the {} chat template supports only system, user and "
          "assistant messages{}",
          i, role, name,
          tools ? " and tool results" : " (tool messages and tool calls are not supported)");
    }
    if (!messages[i].tool_calls.empty() && !tools) {
      fail("message {} has tool calls: the {} chat template does not define tools", i, name);
    }
  }
}

// Llama-2 and Mistral raise this in the template itself.
void check_alternation(const std::vector<ChatMessage>& messages, size_t first,
                       std::string_view name) {
  for (size_t i = first; i < messages.size(); ++i) {
    bool user_turn = (i - first) % 2 == 0;
    if ((messages[i].role == "user") != user_turn) {
      fail(
          "the {} chat template requires roles to alternate user/assistant/user/... "
          "(message {} is \"{}\")",
          name, i, messages[i].role);
    }
  }
}

std::string render_qwen3(const std::vector<ChatMessage>& m, const ChatOptions& options) {
  std::string out;
  if (!options.tools.empty()) {
    out += "<|im_start|>system\n";
    if (m[0].role == "system") out += m[0].content + "\n\n";
    out +=
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are "
        "provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const std::string& tool : options.tools) out += "\n" + tool;
    out +=
        "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
        "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
  } else if (m[0].role == "system") {
    out += "<|im_start|>system\n" + m[0].content + "<|im_end|>\n";
  }
  // The last user message that is not a tool response; thinking shows only after it.
  size_t last_query = m.size() - 1;
  for (size_t k = m.size(); k-- > 0;) {
    const std::string& c = m[k].content;
    if (m[k].role == "user" &&
        !(c.starts_with("<tool_response>") && c.ends_with("</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < m.size(); ++i) {
    const ChatMessage& msg = m[i];
    std::string content = msg.content;
    if (msg.role == "user" || (msg.role == "system" && i != 0)) {
      out += "<|im_start|>" + msg.role + "\n" + content + "<|im_end|>\n";
      continue;
    }
    if (msg.role == "tool") {  // consecutive results share one user turn
      if (i == 0 || m[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + content + "\n</tool_response>";
      if (i + 1 == m.size() || m[i + 1].role != "tool") out += "<|im_end|>\n";
      continue;
    }
    if (msg.role != "assistant") continue;  // the first system message, already written
    std::string reasoning = msg.reasoning_content;
    if (reasoning.empty() && contains(content, "</think>")) {
      std::string_view head = before_first(content, "</think>");
      reasoning =
          strip_newlines(after_last(strip_newlines(head, false, true), "<think>"), true, false);
      content = strip_newlines(after_last(content, "</think>"), true, false);
    }
    const bool last = i + 1 == m.size();
    if (i > last_query && (last || !reasoning.empty())) {
      out += "<|im_start|>assistant\n<think>\n" + strip_newlines(reasoning, true, true) +
             "\n</think>\n\n" + strip_newlines(content, true, false);
    } else {
      out += "<|im_start|>assistant\n" + content;
    }
    for (size_t k = 0; k < msg.tool_calls.size(); ++k) {
      if (k > 0 || !content.empty()) out += "\n";
      // The arguments arrive as JSON text (OpenAI's shape), which the template writes as is.
      out += "<tool_call>\n{\"name\": \"" + msg.tool_calls[k].name +
             "\", \"arguments\": " + msg.tool_calls[k].arguments + "}\n</tool_call>";
    }
    out += "<|im_end|>\n";
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

// Meta's Llama-3.1 Instruct template, tools in the first user turn (its default).
std::string render_llama31(const std::vector<ChatMessage>& all, const ChatOptions& options,
                           const std::string& bos) {
  const std::string eot = "<|eot_id|>";
  const bool tools = !options.tools.empty();
  std::string system;
  size_t first = 0;
  if (all[0].role == "system") {
    system = py_strip(all[0].content);
    first = 1;
  }
  std::string out = bos + "<|start_header_id|>system<|end_header_id|>\n\n";
  if (tools) out += "Environment: ipython\n";
  out += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + system + eot;
  if (tools) {
    if (first == all.size()) {
      fail("the Llama-3.1 template puts tools in the first user message, and there is none");
    }
    out +=
        "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please "
        "respond with a JSON for a function call with its proper arguments that best answers the "
        "given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": "
        "dictionary of argument name and its value}.Do not use variables.\n\n";
    for (const std::string& tool : options.tools) {
      out += python_json_dumps(nlohmann::ordered_json::parse(tool), 4) + "\n\n";
    }
    out += py_strip(all[first].content) + eot;
    ++first;
  }
  for (size_t i = first; i < all.size(); ++i) {
    const ChatMessage& m = all[i];
    if (!m.tool_calls.empty()) {
      if (m.tool_calls.size() != 1) {
        fail("message {}: the Llama-3.1 template allows one tool call per assistant turn, not {}",
             i, m.tool_calls.size());
      }
      // The template writes the arguments with tojson: a JSON object when the client sends
      // them as JSON text (OpenAI's shape), as Hugging Face's docs have them.
      const auto arguments =
          nlohmann::ordered_json::parse(m.tool_calls[0].arguments, nullptr, false);
      if (arguments.is_discarded()) fail("message {}: the tool call's arguments are not JSON", i);
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"" +
             m.tool_calls[0].name + "\", \"parameters\": " + python_json_dumps(arguments) + "}" +
             eot;
    } else if (m.role == "tool") {
      // A string is "iterable" to Jinja, so the template writes a result with tojson: quoted.
      out += "<|start_header_id|>ipython<|end_header_id|>\n\n" +
             python_json_dumps(nlohmann::ordered_json(m.content)) + eot;
    } else {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + py_strip(m.content) + eot;
    }
  }
  if (options.add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_chatml(const std::vector<ChatMessage>& m, const ChatOptions& options,
                          const std::string& default_system) {
  std::string out;
  if (!default_system.empty() && m[0].role != "system") {
    out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
  }
  for (const ChatMessage& msg : m) {
    out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
  }
  if (options.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& m, const ChatOptions& options,
                          const std::string& bos) {
  std::string out = bos;
  for (const ChatMessage& msg : m) {
    out += "<|start_header_id|>" + msg.role + "<|end_header_id|>\n\n" + py_strip(msg.content) +
           "<|eot_id|>";
  }
  if (options.add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// The Llama-2 template ignores add_generation_prompt: a prompt ending in [/INST] is already one.
std::string render_llama2(const std::vector<ChatMessage>& m, const std::string& bos,
                          const std::string& eos) {
  size_t first = m[0].role == "system" ? 1 : 0;
  check_alternation(m, first, "Llama-2");
  std::string out;
  for (size_t i = first; i < m.size(); ++i) {
    std::string content = m[i].content;
    if (i == first && first == 1) {
      content = "<<SYS>>\n" + m[0].content + "\n<</SYS>>\n\n" + content;
    }
    if (m[i].role == "user") {
      out += bos + "[INST] " + py_strip(content) + " [/INST]";
    } else if (m[i].role == "assistant") {
      // Appended piece by piece: GCC 12's -Wrestrict misfires on `" " + std::string`.
      out += ' ';
      out += py_strip(content);
      out += ' ';
      out += eos;
    }
    // A later system message in an assistant slot passes the template's alternation check and
    // renders as nothing; we match it.
  }
  return out;
}

// "System: …\n", "User: …\n", "Assistant: …" + EOS + "\n", after BOS; contents verbatim.
std::string render_plain(const std::vector<ChatMessage>& m, const ChatOptions& options,
                         const std::string& bos, const std::string& eos) {
  std::string out = bos;
  for (const ChatMessage& message : m) {
    if (message.role == "system") {
      out += "System: " + message.content + "\n";
    } else if (message.role == "user") {
      out += "User: " + message.content + "\n";
    } else {
      out += "Assistant: " + message.content + eos + "\n";
    }
  }
  if (options.add_generation_prompt) out += "Assistant:";
  return out;
}

std::string render_mistral(const std::vector<ChatMessage>& m, const std::string& bos,
                           const std::string& eos, const std::string& answer_suffix) {
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i].role == "system") {
      fail(
          "the Mistral chat template supports only user and assistant roles (message {} is "
          "\"system\"); put the instructions in the first user message",
          i);
    }
  }
  check_alternation(m, 0, "Mistral");
  std::string out = bos;
  for (const ChatMessage& msg : m) {
    if (msg.role == "user") {
      out += "[INST] " + msg.content + " [/INST]";
    } else {
      out += msg.content + eos + answer_suffix;
    }
  }
  return out;
}

// Qwen2-style templates hard-code a system prompt for conversations without one.
std::string find_default_system(std::string_view source) {
  constexpr std::string_view kStart = "<|im_start|>system\\n";
  size_t pos = 0;
  while ((pos = source.find(kStart, pos)) != std::string_view::npos) {
    size_t text = pos + kStart.size();
    size_t end = source.find("<|im_end|>", text);
    if (end == std::string_view::npos) break;
    std::string_view literal = source.substr(text, end - text);
    // Only a plain literal counts, not an expression such as ' + messages[0]['content'] + '.
    if (!literal.empty() && literal.find_first_of("'\"{}+\\") == std::string_view::npos) {
      return std::string(literal);
    }
    pos = text;
  }
  return "";
}

}  // namespace

ChatTemplate::ChatTemplate(ChatFormat format) : format_(format) {
  if (format == ChatFormat::kLlama3 || format == ChatFormat::kLlama31) bos_ = "<|begin_of_text|>";
}

ChatTemplate ChatTemplate::of(ChatFormat format) { return ChatTemplate(format); }

ChatTemplate ChatTemplate::from_source(std::string_view s) {
  auto refuse = [&](std::string_view why) -> ChatTemplate {
    fail(
        "unsupported chat template ({}); supported templates: {}. Render the prompt yourself or "
        "pick a supported format explicitly",
        why, kSupported);
  };
  if (contains(s, "<|im_start|>")) {
    if (contains(s, "reasoning_content") && contains(s, "enable_thinking") &&
        contains(s, "last_query_index")) {
      return ChatTemplate(ChatFormat::kQwen3);
    }
    if (contains(s, "<think>")) return refuse("a ChatML template with <think> that is not Qwen3's");
    ChatTemplate t(ChatFormat::kChatML);
    t.default_system_ = find_default_system(s);
    return t;
  }
  if (contains(s, "<|start_header_id|>") && contains(s, "<|eot_id|>")) {
    if (contains(s, "Cutting Knowledge Date") || contains(s, "ipython") || contains(s, "tools")) {
      if (contains(s, "strftime_now")) {
        return refuse("Llama-3.2 or later, whose prompt carries today's date");
      }
      if (contains(s, "26 Jul 2024") && contains(s, "tools_in_user_message") &&
          contains(s, "\"parameters\": dictionary of argument name and its value}") &&
          contains(s, "message.content is mapping or message.content is iterable")) {
        return ChatTemplate(ChatFormat::kLlama31);
      }
      return refuse("a Llama-3 template with tools that is not Llama-3.1's");
    }
    return ChatTemplate(ChatFormat::kLlama3);
  }
  if (contains(s, "[INST]") && contains(s, "<<SYS>>")) return ChatTemplate(ChatFormat::kLlama2);
  if (contains(s, "[INST]")) {
    if (contains(s, "Only user and assistant roles are supported") &&
        !contains(s, "[AVAILABLE_TOOLS]") && !contains(s, "system_message")) {
      ChatTemplate t(ChatFormat::kMistral);
      // Not `= " "`: GCC 12 inlines that into a memcpy it then flags with a false -Wrestrict
      // (GCC bug 105651).
      if (contains(s, "eos_token + ' '")) t.answer_suffix_ = std::string(1, ' ');
      return t;
    }
    return refuse("a Mistral template newer than v0.2, with system prompts or tools");
  }
  return refuse("no known format matches its text");
}

ChatTemplate ChatTemplate::detect(const Tokenizer& tokenizer, std::string_view model_type) {
  ChatTemplate t(ChatFormat::kChatML);
  if (const auto& source = tokenizer.chat_template_source()) {
    t = from_source(*source);
  } else if (model_type == "qwen3") {
    t = ChatTemplate(ChatFormat::kQwen3);
  } else if (model_type == "qwen2") {
    t = ChatTemplate(ChatFormat::kChatML);
  } else if (model_type == "llama") {
    t = ChatTemplate(tokenizer.token_id("<|start_header_id|>") ? ChatFormat::kLlama3
                                                               : ChatFormat::kLlama2);
  } else if (model_type == "mistral") {
    t = ChatTemplate(ChatFormat::kMistral);
  } else {
    fail(
        "the tokenizer has no chat template and model type \"{}\" has no default one; supported: "
        "{} (model types qwen3, qwen2, llama, mistral)",
        model_type, kSupported);
  }
  t.take_special_texts(tokenizer);
  return t;
}

void ChatTemplate::take_special_texts(const Tokenizer& tokenizer) {
  // The BOS/EOS texts come from the tokenizer when it names them (as the Jinja context does).
  if (format_ == ChatFormat::kLlama3 || format_ == ChatFormat::kLlama31 ||
      format_ == ChatFormat::kLlama2 || format_ == ChatFormat::kMistral ||
      format_ == ChatFormat::kPlain) {
    if (auto bos = tokenizer.bos_id()) bos_ = tokenizer.token_text(*bos);
    if (auto eos = tokenizer.eos_id()) eos_ = tokenizer.token_text(*eos);
  }
  if (format_ == ChatFormat::kPlain) {
    if (!tokenizer.bos_id() || !tokenizer.add_bos()) bos_.clear();
    if (!tokenizer.eos_id()) {
      fail(
          "the plain chat format ends each reply with the end-of-sequence token, and this "
          "tokenizer has none; pick a template that defines its own end-of-turn marker");
    }
  }
}

namespace {

constexpr std::pair<std::string_view, ChatFormat> kChoices[] = {
    {"plain", ChatFormat::kPlain},     {"qwen3", ChatFormat::kQwen3},
    {"chatml", ChatFormat::kChatML},   {"llama3", ChatFormat::kLlama3},
    {"llama31", ChatFormat::kLlama31}, {"llama2", ChatFormat::kLlama2},
    {"mistral", ChatFormat::kMistral}};

}  // namespace

ChatTemplate ChatTemplate::select(const Tokenizer& tokenizer, std::string_view model_type,
                                  std::string_view choice, bool require_own_template) {
  if (choice == "auto") {
    if (require_own_template && !tokenizer.chat_template_source()) {
      fail(
          "the base has no chat template (its tokenizer_config.json defines none), so chat data "
          "has no format to be trained in; pass --chat-format plain (\"User: …\" / \"Assistant: "
          "…\" lines, docs/personalization.md) or name a template: qwen3, chatml, llama3, llama2, "
          "mistral");
    }
    return detect(tokenizer, model_type);
  }
  for (const auto& [name, format] : kChoices) {
    if (name != choice) continue;
    ChatTemplate t(format);
    t.take_special_texts(tokenizer);
    return t;
  }
  fail(
      "unknown chat format '{}': use auto, plain, qwen3, chatml, llama3, llama31, llama2 or "
      "mistral",
      choice);
}

std::string_view ChatTemplate::choice_name() const {
  for (const auto& [name, format] : kChoices) {
    if (format == format_) return name;
  }
  return "auto";
}

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::kQwen3:
      return "Qwen3";
    case ChatFormat::kChatML:
      return "ChatML";
    case ChatFormat::kLlama3:
      return "Llama-3";
    case ChatFormat::kLlama31:
      return "Llama-3.1";
    case ChatFormat::kLlama2:
      return "Llama-2";
    case ChatFormat::kMistral:
      return "Mistral";
    case ChatFormat::kPlain:
      return "plain";
  }
  return "unknown";
}

ToolCallSyntax ChatTemplate::tool_call_syntax() const {
  if (format_ == ChatFormat::kQwen3) return {"<tool_call>", "</tool_call>", "arguments", false};
  if (format_ == ChatFormat::kLlama31) return {"", "", "parameters", true};
  return {};
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 const ChatOptions& options) const {
  check_roles(messages, name(), supports_tools());
  if (!options.tools.empty() && !supports_tools()) {
    fail(
        "the {} chat template does not define tools: a request with tools needs a model whose "
        "template does (Qwen3)",
        name());
  }
  switch (format_) {
    case ChatFormat::kQwen3:
      return render_qwen3(messages, options);
    case ChatFormat::kChatML:
      return render_chatml(messages, options, default_system_);
    case ChatFormat::kLlama3:
      return render_llama3(messages, options, bos_);
    case ChatFormat::kLlama31:
      return render_llama31(messages, options, bos_);
    case ChatFormat::kLlama2:
      return render_llama2(messages, bos_, eos_);
    case ChatFormat::kMistral:
      return render_mistral(messages, bos_, eos_, answer_suffix_);
    case ChatFormat::kPlain:
      return render_plain(messages, options, bos_, eos_);
  }
  return "";
}

}  // namespace bitdelta
