// The OpenAI-compatible generation routes: /v1/completions and /v1/chat/completions (n choices,
// log probabilities, streaming), and /tokenize, /detokenize.
#include "constrain/validate.h"
#include "serve/openai_request.h"
#include "serve/server_impl.h"
#include "serve/tool_calls.h"

namespace bitdelta {

namespace {

// A token's bytes as JSON text: UTF-8 where they are whole characters, "\xNN" for the bytes of
// a character split across tokens (as OpenAI writes them).
std::string token_string(const std::string& bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    bool whole = len > 0 && i + len <= bytes.size();
    for (size_t k = 1; whole && k < len; ++k) {
      whole = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 2;
    }
    if (whole) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  return out;
}

json byte_list(const std::string& bytes) {
  json out = json::array();
  for (char c : bytes) out.push_back(static_cast<unsigned char>(c));
  return out;
}

int64_t code_points(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) >> 6) != 2;
  return n;
}

// Renders TokenLogprob lists in the two shapes OpenAI uses.
class LogprobWriter {
 public:
  LogprobWriter(const Tokenizer& tokenizer, bool chat) : tokenizer_(tokenizer), chat_(chat) {}

  // Chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...], "refusal": null}.
  // Completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}, with
  // offsets continuing from `offset` (updated).
  json render(const std::vector<TokenLogprob>& entries, int64_t& offset) const {
    if (chat_) {
      json content = json::array();
      for (const TokenLogprob& e : entries) {
        json top = json::array();
        for (const auto& [id, lp] : e.top) top.push_back(entry(id, lp));
        json item = entry(e.id, e.logprob);
        item["top_logprobs"] = std::move(top);
        content.push_back(std::move(item));
      }
      return {{"content", std::move(content)}, {"refusal", nullptr}};
    }
    json tokens = json::array(), logprobs = json::array(), tops = json::array(),
         offsets = json::array();
    for (const TokenLogprob& e : entries) {
      const std::string text = token_string(tokenizer_.token_bytes(e.id));
      tokens.push_back(text);
      logprobs.push_back(e.logprob);
      json top = json::object();
      for (const auto& [id, lp] : e.top) top[token_string(tokenizer_.token_bytes(id))] = lp;
      tops.push_back(std::move(top));
      offsets.push_back(offset);
      offset += code_points(tokenizer_.token_bytes(e.id));  // the text's own characters
    }
    return {{"tokens", std::move(tokens)},
            {"token_logprobs", std::move(logprobs)},
            {"top_logprobs", std::move(tops)},
            {"text_offset", std::move(offsets)}};
  }

 private:
  json entry(int32_t id, float logprob) const {
    const std::string bytes = tokenizer_.token_bytes(id);
    return {{"token", token_string(bytes)}, {"logprob", logprob}, {"bytes", byte_list(bytes)}};
  }
  const Tokenizer& tokenizer_;
  bool chat_;
};

// Calls that did not come out of a grammar (a Llama 3.1 reply under tool_choice "auto", or a
// call whose markers the model spelled out in pieces) are checked against their tool's
// parameters when whole; one that fails is given back as text. Numbering stays contiguous.
class ToolCallChecker {
 public:
  ToolCallChecker(std::shared_ptr<const std::vector<ToolSpec>> tools, std::string arguments_key)
      : tools_(std::move(tools)), key_(std::move(arguments_key)) {}

  // `unclosed_as_text`: a call that never closed is given back as text (it was not under a
  // grammar, so its arguments are whatever the model left); otherwise it stays a call cut short
  // (max_tokens), as OpenAI's are.
  std::vector<ToolCallParser::Event> check(std::vector<ToolCallParser::Event> events,
                                           bool unclosed_as_text = false) {
    using Kind = ToolCallParser::Event::Kind;
    std::vector<ToolCallParser::Event> out;
    for (size_t i = 0; i < events.size(); ++i) {
      auto& ev = events[i];
      if (ev.kind == Kind::kCallStart) {
        // Whole in this batch (start ... end)? Then check it before anything goes out.
        size_t end = i + 1;
        std::string arguments;
        while (end < events.size() &&
               !(events[end].kind == Kind::kCallEnd && events[end].call == ev.call)) {
          if (events[end].kind == Kind::kArguments && events[end].call == ev.call) {
            arguments += events[end].text;
          }
          ++end;
        }
        if (end < events.size() || unclosed_as_text) {
          const std::string problem =
              end < events.size() ? problem_of(ev.text, arguments) : "the call never closed";
          if (!problem.empty()) {
            spdlog::debug("tool call to {} given back as text: {}", ev.text, problem);
            visible_.push_back(-1);
            out.push_back({Kind::kText, -1,
                           "{\"name\": " + json(ev.text).dump() + ", " + json(key_).dump() + ": " +
                               arguments + "}"});
            i = end < events.size() ? end : events.size();
            continue;
          }
        }
        visible_.push_back(next_++);
      }
      if (ev.kind != Kind::kText) {
        const int v = visible_.at(static_cast<size_t>(ev.call));
        if (v < 0) continue;
        ev.call = v;
      }
      out.push_back(std::move(ev));
    }
    return out;
  }

 private:
  std::string problem_of(const std::string& name, const std::string& arguments) const {
    const json args = json::parse(arguments, nullptr, false);
    if (args.is_discarded() || !args.is_object()) return "the arguments are not a JSON object";
    for (const ToolSpec& t : *tools_) {
      if (t.name != name) continue;
      try {
        return constrain::validation_error(args, json::parse(t.parameters.dump()));
      } catch (const Error& e) {
        return e.what();
      }
    }
    return "no tool is named " + name;
  }
  std::shared_ptr<const std::vector<ToolSpec>> tools_;  // outlives the request's handler
  std::string key_;
  std::vector<int> visible_;  // parser's call number → the client's, or -1 when given back
  int next_ = 0;
};

// One choice's part of the answer so far.
struct Choice {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;
  int64_t completion_tokens = 0;
  int64_t logprob_offset = 0;  // completions' text_offset of the next token
  bool started = false;        // streaming: its first chunk went out
  bool done = false;
  std::optional<ToolCallParser> tools;  // with tools: the output's tool calls
  std::optional<ToolCallChecker> checker;
  bool hold = false;  // calls stream out once whole and checked
  std::vector<ToolCallParser::Event> held;
  std::vector<json> calls;              // {id, type, function: {name, arguments}}
};

std::string call_id() { return random_id("call").replace(0, 5, "call_"); }

// The constraint the request asks for: response_format's grammar, or the tool-call grammar
// (forced from the first token for tool_choice "required" or a named function; from the
// template's opening token on for "auto"; the opening token banned for "none"). Every tool's
// schema is compiled either way, so a schema the grammar cannot express is a 400 up front.
std::shared_ptr<const TokenConstraint> make_constraint(
    Base& base, const OpenAiRequest& r, const std::optional<ToolCallSyntax>& syntax) {
  using constrain::Grammar;
  using constrain::GrammarPart;
  auto compile = [&](const std::string& key, const char* param, const auto& make) {
    try {
      return base.grammars->get(key, make);
    } catch (const Error& e) {
      field_fail(param, e.what(), "invalid_schema");
    }
  };
  if ((r.response_format.type != ResponseFormat::Type::kText || !r.tools.empty()) &&
      base.stop_ids.empty()) {
    field_fail(r.tools.empty() ? "response_format" : "tools",
               "this model's tokenizer names no end-of-turn token, so a constrained reply could "
               "not end; structured output and tool calls need one");
  }
  switch (r.response_format.type) {
    case ResponseFormat::Type::kJsonObject:
      return std::make_shared<GrammarConstraint>(
          compile("json_object", "response_format", [] { return Grammar::any_json_object(); }));
    case ResponseFormat::Type::kJsonSchema:
      return std::make_shared<GrammarConstraint>(
          compile("json_schema " + r.response_format.schema.dump(), "response_format", [&] {
            return Grammar::from_json_schema(r.response_format.schema,
                                             "response_format.json_schema.schema");
          }));
    case ResponseFormat::Type::kText:
      break;
  }
  if (r.tools.empty() || !syntax) return nullptr;
  const bool forced = r.tool_choice.mode == ToolChoice::Mode::kRequired ||
                      r.tool_choice.mode == ToolChoice::Mode::kNamed;
  std::vector<std::vector<GrammarPart>> alternatives;
  std::string key = forced ? "tool call from the start" : "tool call after its token";
  key += " " + syntax->open + " " + syntax->arguments_key;
  for (size_t i = 0; i < r.tools.size(); ++i) {
    const ToolSpec& t = r.tools[i];
    if (r.tool_choice.mode == ToolChoice::Mode::kNamed && t.name != r.tool_choice.name) continue;
    // The call as the template itself writes one: Qwen3's "<tool_call>\n{"name": "f",
    // "arguments": {...}}\n</tool_call>" (after the opening token when the model chose to call),
    // Llama 3.1's {"name": "f", "parameters": {...}}.
    const std::string head = "{\"name\": \"" + t.name + "\", \"" + syntax->arguments_key + "\": ";
    alternatives.push_back(
        {GrammarPart::literal(
             syntax->whole_reply ? head : (forced ? syntax->open : std::string()) + "\n" + head),
         GrammarPart::json_schema(t.parameters, fmt::format("tools[{}].function.parameters", i)),
         GrammarPart::literal(syntax->whole_reply ? "}" : "}\n" + syntax->close)});
    key += "\n" + t.name + " " + t.parameters.dump();
  }
  auto compiled = compile(key, "tools", [&] { return Grammar::one_of(alternatives); });
  if (forced) return std::make_shared<GrammarConstraint>(compiled);
  // Llama 3.1 opens a call with no token of its own: "auto" leaves its reply free (the call is
  // validated after it, ToolCallChecker) and "none" leaves it as text.
  if (syntax->whole_reply) return nullptr;
  const auto open_id = base.tokenizer->token_id(syntax->open);
  if (!open_id) {
    field_fail("tools", fmt::format("this model's vocabulary has no '{}' token to open a tool "
                                    "call with",
                                    syntax->open));
  }
  return std::make_shared<ToolCallConstraint>(*open_id, compiled, r.parallel_tool_calls,
                                              r.tool_choice.mode == ToolChoice::Mode::kNone);
}

json tool_call_json(const std::string& id, const std::string& name, const std::string& arguments) {
  return {
      {"id", id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", arguments}}}};
}

}  // namespace

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res,
                            bool chat_request) {
  const auto start = Clock::now();
  const Principal who = authenticate(req);
  const json body = parse_body(req);
  auto model_name = field<std::string>(body, "model", json::value_t::string);
  if (!model_name) field_fail("model", "'model' is required: the base model or an adapter id");
  Base* base = find_base(*model_name);
  std::optional<AdapterRecord> record;
  if (base == nullptr) {
    record = resolve(who, *model_name);
    verify_stored(*record, *model_name);  // its bytes (and signature) before anything reads it
    base = base_of(*record);
    if (base == nullptr) {
      http_fail(404,
                fmt::format("The model '{}' does not exist or you do not have access to it.",
                            *model_name),
                "invalid_request_error", "model_not_found");
    }
  }
  const Transformer* model = base->model.get();
  const Tokenizer* tokenizer = &*base->tokenizer;
  const auto ordered = nlohmann::ordered_json::parse(req.body, nullptr, false);
  OpenAiRequest r = parse_openai_request(
      body, ordered, chat_request,
      {o.max_tokens_limit, static_cast<int>(std::min<int64_t>(o.max_batch, kMaxChoices)),
       static_cast<int32_t>(model->config().vocab_size)});
  GenerateOptions& options = r.options;
  options.stop_ids = base->stop_ids;

  std::shared_ptr<Adapter> adapter;
  if (record) {
    try {
      adapter = base->cache->get(record->sha256, store->blob_path(*record));  // off the engine
    } catch (const Error& e) {
      http_fail(500, fmt::format("adapter '{}' could not be loaded: {}", *model_name, e.what()),
                "server_error");
    }
    options.adapter = &adapter->weights();
  }

  std::vector<int32_t> prompt;
  std::optional<ToolCallSyntax> tool_syntax;  // the template's, with tools
  if (chat_request) {
    // An adapter trained in another chat format than the base's (e.g. "plain" on a base
    // without a template) is talked to in that format.
    std::optional<ChatTemplate> adapter_chat;
    if (adapter) {
      if (auto it = adapter->metadata().find("chat_format"); it != adapter->metadata().end()) {
        try {
          adapter_chat.emplace(
              ChatTemplate::select(*tokenizer, model->config().model_type, it->second));
        } catch (const Error& e) {
          http_fail(400, fmt::format("adapter '{}': {}", *model_name, e.what()));
        }
      }
    }
    const ChatTemplate* templ = adapter_chat ? &*adapter_chat : base->chat ? &*base->chat : nullptr;
    if (!templ) http_fail(400, "this model has no supported chat template; use /v1/completions");
    ChatOptions chat_options;
    if (!r.tools.empty()) {
      if (!templ->supports_tools()) {
        field_fail("tools", fmt::format("the {} chat template of '{}' defines no tools; tool calls "
                                        "need a model whose template does (Qwen3)",
                                        templ->name(), *model_name));
      }
      for (const ToolSpec& t : r.tools) chat_options.tools.push_back(t.rendered);
      tool_syntax = templ->tool_call_syntax();
    }
    std::string text;
    try {
      text = templ->render(r.messages, chat_options);
    } catch (const Error& e) {
      field_fail("messages", e.what());
    }
    prompt = tokenizer->encode(text);
    options.continues_prompt = false;  // the reply's content starts a text of its own
    options.strip_leading_space = templ->format() == ChatFormat::kPlain;
  } else {
    if (tokenizer->add_bos() && tokenizer->bos_id()) prompt.push_back(*tokenizer->bos_id());
    for (int32_t id : tokenizer->encode(r.prompt, /*parse_special=*/false)) prompt.push_back(id);
  }
  if (prompt.empty()) http_fail(400, "the prompt is empty");
  options.constraint = make_constraint(*base, r, tool_syntax);
  const int64_t context = model->config().max_position_embeddings;
  if (options.max_tokens < 0) {  // OpenAI's defaults: 16 for completions, the rest for chat
    options.max_tokens = chat_request
                             ? std::clamp<int64_t>(context - static_cast<int64_t>(prompt.size()), 0,
                                                   o.max_tokens_limit)
                             : 16;
  }
  const int64_t limit = o.max_prompt_tokens > 0 ? o.max_prompt_tokens : context;
  if (static_cast<int64_t>(prompt.size()) > limit ||
      static_cast<int64_t>(prompt.size()) + options.max_tokens > context) {
    http_fail(400,
              fmt::format("the prompt has {} tokens; with max_tokens {} that exceeds the "
                          "limit ({} prompt tokens, {} in all)",
                          prompt.size(), options.max_tokens, limit, context),
              "invalid_request_error", "context_length_exceeded");
  }

  const int n = r.n;
  std::shared_ptr<RequestChannel> channel;
  try {
    channel = base->scheduler->submit(
        {std::move(prompt), options, adapter, record ? "adapter:" + record->sha256 : "", n});
  } catch (const Error& e) {
    http_fail(400, e.what());
  }
  if (!channel) http_fail(429, "too many requests are waiting; retry shortly", "rate_limit_error");

  const std::string id = random_id(chat_request ? "chatcmpl" : "cmpl");
  const std::string object = chat_request ? "chat.completion" : "text_completion";
  const int64_t created = unix_now();
  const std::string name = *model_name;
  const std::string echo = r.echo ? r.prompt : "";
  const bool include_usage = r.include_usage;
  const bool logprobs = options.logprobs >= 0;
  const LogprobWriter writer(*tokenizer, chat_request);
  auto count = [this](int64_t prompt_n, int64_t completion_n) {
    prompt_tokens.inc(static_cast<double>(prompt_n));
    completion_tokens.inc(static_cast<double>(completion_n));
  };
  auto usage_json = [](int64_t prompt_n, int64_t completion_n) {
    return json{{"prompt_tokens", prompt_n},
                {"completion_tokens", completion_n},
                {"total_tokens", prompt_n + completion_n}};
  };

  // Once the response is done or abandoned: cancel (no effect once finished; frees the
  // sequences if the client left) and count the request out.
  in_flight++;
  const auto release = [this, channel](bool) {
    channel->cancel();
    in_flight--;
  };
  // The choices' state and the prompt's token count, shared by the provider's calls.
  struct State {
    std::vector<Choice> choices;
    int64_t prompt_tokens = 0;
    int remaining = 0;
    bool first_text = true;
    Clock::time_point last;
  };
  auto state = std::make_shared<State>();
  state->choices.resize(static_cast<size_t>(n));
  state->remaining = n;
  state->last = start;
  std::vector<std::string> tool_names;
  for (const ToolSpec& t : r.tools) tool_names.push_back(t.name);
  const bool parse_tools = tool_syntax && r.tool_choice.mode != ToolChoice::Mode::kNone;
  const bool forced_call = r.tool_choice.mode == ToolChoice::Mode::kRequired ||
                           r.tool_choice.mode == ToolChoice::Mode::kNamed;
  const auto tools = std::make_shared<const std::vector<ToolSpec>>(r.tools);
  for (Choice& c : state->choices) {
    c.logprob_offset = code_points(echo);
    if (parse_tools) {
      c.tools.emplace(*tool_syntax, tool_names);
      c.checker.emplace(tools, tool_syntax->arguments_key);
      // Outside a forced call nothing guarantees a call's arguments (a Qwen3 model may spell its
      // markers out in plain tokens, a Llama 3.1 reply is free): each call waits until whole
      // and checked.
      c.hold = !forced_call;
    }
  }

  if (!r.stream) {
    // One JSON body, sent with chunked encoding so that the connection can be watched while
    // the request waits and decodes: httplib cannot tell that a peer has closed until a write
    // to it fails, so a single space (insignificant whitespace before the JSON value) goes out
    // with every token and every 100 ms; a client that went away is noticed within two such
    // writes and its request is cancelled (KV cache freed), even while it is still queued.
    // An internal error after that point (the status is sent) aborts the response, which
    // clients report as a failed request.
    res.set_chunked_content_provider(
        "application/json",
        [=, this](size_t, httplib::DataSink& sink) {
          while (true) {
            auto e = channel->next(std::chrono::milliseconds(100));
            if (!sink.write(" ", 1)) return client_left(*channel);
            if (!e) {
              if (Clock::now() - start > std::chrono::seconds(600)) {
                spdlog::error("request {} timed out", id);
                channel->cancel();
                return false;
              }
              continue;
            }
            if (state->first_text && !e->text.empty()) {
              ttft.observe(std::chrono::duration<double>(Clock::now() - start).count());
              state->first_text = false;
            }
            Choice& c = state->choices.at(static_cast<size_t>(e->index));
            c.text += e->text;
            for (auto& lp : e->logprobs) c.logprobs.push_back(std::move(lp));
            if (!e->done) continue;
            if (e->finish_reason == "error") {
              spdlog::error("request {} failed: {}", id, e->error);
              return false;
            }
            c.done = true;
            c.finish_reason = e->finish_reason;
            c.completion_tokens = e->completion_tokens;
            state->prompt_tokens = e->prompt_tokens;
            if (--state->remaining > 0) continue;
            json choices = json::array();
            int64_t completion_n = 0;
            for (int i = 0; i < n; ++i) {
              Choice& ci = state->choices[static_cast<size_t>(i)];
              completion_n += ci.completion_tokens;
              json lp = logprobs ? writer.render(ci.logprobs, ci.logprob_offset) : json(nullptr);
              json message = {{"role", "assistant"}, {"content", ci.text}};
              if (ci.tools) {  // the text becomes content and tool calls
                std::string content;
                auto events = ci.tools->feed(ci.text);
                for (auto& ev : ci.tools->finish()) events.push_back(std::move(ev));
                for (const auto& ev : ci.checker->check(std::move(events), ci.hold)) {
                  using Kind = ToolCallParser::Event::Kind;
                  if (ev.kind == Kind::kText)
                    content += ev.text;
                  else if (ev.kind == Kind::kCallStart)
                    ci.calls.push_back(tool_call_json(call_id(), ev.text, ""));
                  else if (ev.kind == Kind::kArguments)
                    ci.calls.at(static_cast<size_t>(ev.call))["function"]["arguments"] =
                        ci.calls.at(static_cast<size_t>(ev.call))["function"]["arguments"]
                            .get<std::string>() +
                        ev.text;
                }
                message["content"] = content.empty() ? json(nullptr) : json(content);
                if (!ci.calls.empty()) {
                  message["tool_calls"] = ci.calls;
                  // Cut short by max_tokens, the answer says "length", as OpenAI's does.
                  if (ci.finish_reason == "stop") ci.finish_reason = "tool_calls";
                }
              }
              choices.push_back(chat_request ? json{{"index", i},
                                                    {"message", std::move(message)},
                                                    {"logprobs", std::move(lp)},
                                                    {"finish_reason", ci.finish_reason}}
                                             : json{{"index", i},
                                                    {"text", echo + ci.text},
                                                    {"logprobs", std::move(lp)},
                                                    {"finish_reason", ci.finish_reason}});
            }
            count(state->prompt_tokens, completion_n);
            const std::string answer =
                json{{"id", id},
                     {"object", object},
                     {"created", created},
                     {"model", name},
                     {"choices", std::move(choices)},
                     {"usage", usage_json(state->prompt_tokens, completion_n)}}
                    .dump();
            sink.write(answer.data(), answer.size());
            sink.done();
            return true;
          }
        },
        release);
    return;
  }

  // Server-sent events: chunks per choice as its text comes (the chat's first chunk of each
  // choice carries the role, the completions' carries an echoed prompt), each choice's last
  // chunk with its finish_reason, then usage (its own chunk with no choices when
  // stream_options.include_usage, as OpenAI; otherwise on the last choice's last chunk), then
  // [DONE]. A client that goes away cancels the request (its KV cache is freed).
  const std::string chunk_object = chat_request ? "chat.completion.chunk" : "text_completion";
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string line = "data: " + j.dump() + "\n\n";
          return sink.write(line.data(), line.size());
        };
        auto chunk = [&](json choice) {
          return json{{"id", id},
                      {"object", chunk_object},
                      {"created", created},
                      {"model", name},
                      {"choices", json::array({std::move(choice)})}};
        };
        auto piece = [&](int index, const std::string& text, json lp, const json& finish) {
          return chunk(chat_request ? json{{"index", index},
                                           {"delta", text.empty() ? json::object()
                                                                  : json{{"content", text}}},
                                           {"logprobs", std::move(lp)},
                                           {"finish_reason", finish}}
                                    : json{{"index", index},
                                           {"text", text},
                                           {"logprobs", std::move(lp)},
                                           {"finish_reason", finish}});
        };
        auto open = [&](int index) {  // a choice's first chunk, before any of its text
          Choice& c = state->choices[static_cast<size_t>(index)];
          if (c.started) return true;
          c.started = true;
          if (chat_request) {
            return send(chunk({{"index", index},
                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}}));
          }
          return echo.empty() || send(piece(index, echo, nullptr, nullptr));
        };
        for (int i = 0; i < n; ++i) {
          if (!open(i)) return client_left(*channel);
        }
        while (true) {
          auto e = channel->next(std::chrono::milliseconds(100));
          if (!e) {
            // An SSE comment line, which clients ignore: the write that notices a client that
            // left while the request waits for its first token.
            static constexpr std::string_view kHeartbeat = ": waiting\n\n";
            if (!sink.write(kHeartbeat.data(), kHeartbeat.size())) {
              return client_left(*channel);
            }
            continue;
          }
          if (e->finish_reason == "error") {
            send(json{{"error", {{"message", e->error}, {"type", "server_error"}}}});
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
            return true;
          }
          Choice& c = state->choices.at(static_cast<size_t>(e->index));
          const auto now = Clock::now();
          // With tools, the text goes through the choice's parser: content deltas, then each
          // call's id and name, then pieces of its arguments, as OpenAI streams them.
          auto send_tool_events = [&](std::vector<ToolCallParser::Event> events, bool last) {
            using Kind = ToolCallParser::Event::Kind;
            if (c.hold) {  // text streams on; a call waits until it is whole and checked
              std::vector<ToolCallParser::Event> pass;
              for (auto& ev : events) {
                if (ev.kind == Kind::kText && c.held.empty())
                  pass.push_back(std::move(ev));
                else
                  c.held.push_back(std::move(ev));
              }
              if (last) {
                for (auto& ev : c.held) pass.push_back(std::move(ev));
                c.held.clear();
              }
              events = std::move(pass);
            }
            for (const auto& ev : c.checker->check(std::move(events), c.hold && last)) {
              json delta;
              if (ev.kind == Kind::kCallEnd) continue;
              if (ev.kind == Kind::kText) {
                delta = {{"content", ev.text}};
              } else if (ev.kind == Kind::kCallStart) {
                c.calls.push_back(tool_call_json(call_id(), ev.text, ""));
                json call = c.calls.back();
                call["index"] = ev.call;
                delta = {{"tool_calls", json::array({call})}};
              } else {
                delta = {{"tool_calls", json::array({{{"index", ev.call},
                                                      {"function", {{"arguments", ev.text}}}}})}};
              }
              if (!send(chunk({{"index", e->index},
                               {"delta", std::move(delta)},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}}))) {
                return false;
              }
            }
            return true;
          };
          if (!e->text.empty() || !e->logprobs.empty()) {
            if (!e->text.empty()) {
              (state->first_text ? ttft : itl)
                  .observe(std::chrono::duration<double>(now - state->last).count());
              state->first_text = false;
              state->last = now;
            }
            json lp = logprobs ? writer.render(e->logprobs, c.logprob_offset) : json(nullptr);
            if (c.tools) {
              if (!send_tool_events(c.tools->feed(e->text), false) ||
                  (logprobs && !e->logprobs.empty() &&
                   !send(piece(e->index, "", std::move(lp), nullptr)))) {
                return client_left(*channel);
              }
            } else if (!send(piece(e->index, e->text, std::move(lp), nullptr))) {
              return client_left(*channel);
            }
          }
          if (!e->done) continue;
          if (c.tools && !send_tool_events(c.tools->finish(), true)) return client_left(*channel);
          c.done = true;
          c.completion_tokens = e->completion_tokens;
          state->prompt_tokens = e->prompt_tokens;
          const bool last = --state->remaining == 0;
          int64_t completion_n = 0;
          for (const Choice& ci : state->choices) completion_n += ci.completion_tokens;
          json finish = piece(
              e->index, "", nullptr,
              !c.calls.empty() && e->finish_reason == "stop" ? "tool_calls" : e->finish_reason);
          if (last && !include_usage)
            finish["usage"] = usage_json(state->prompt_tokens, completion_n);
          send(finish);
          if (!last) continue;
          count(state->prompt_tokens, completion_n);
          if (include_usage) {
            send(json{{"id", id},
                      {"object", chunk_object},
                      {"created", created},
                      {"model", name},
                      {"choices", json::array()},
                      {"usage", usage_json(state->prompt_tokens, completion_n)}});
          }
          const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        }
      },
      release);
}

// llama.cpp's server's /tokenize and /detokenize, for clients that count tokens: the model (a
// base or an adapter, which shares its base's tokenizer) is optional, the first base otherwise.
void Server::Impl::token_routes() {
  auto tokenizer_of = [this](const Principal& who, const json& body) -> const Tokenizer& {
    auto model = field<std::string>(body, "model", json::value_t::string);
    if (!model) return *bases.front()->tokenizer;
    if (Base* b = find_base(*model)) return *b->tokenizer;
    const AdapterRecord r = resolve(who, *model);
    Base* b = base_of(r);
    if (b == nullptr) {
      http_fail(
          404,
          fmt::format("The model '{}' does not exist or you do not have access to it.", *model),
          "invalid_request_error", "model_not_found");
    }
    return *b->tokenizer;
  };
  handle(
      "POST", "/tokenize", "tokenize",
      [this, tokenizer_of](const httplib::Request& req, httplib::Response& res) {
        const Principal who = authenticate(req);
        const json body = parse_body(req);
        for (const auto& [key, value] : body.items()) {
          if (key != "content" && key != "model" && key != "add_special" && key != "with_pieces") {
            field_fail(key, fmt::format("unrecognized field '{}' (content, model, add_special, "
                                        "with_pieces)",
                                        key));
          }
        }
        auto content = field<std::string>(body, "content", json::value_t::string);
        if (!content) field_fail("content", "'content' (the text to tokenize) is required");
        const Tokenizer& tokenizer = tokenizer_of(who, body);
        const bool add_special =
            field<bool>(body, "add_special", json::value_t::boolean).value_or(false);
        const bool with_pieces =
            field<bool>(body, "with_pieces", json::value_t::boolean).value_or(false);
        std::vector<int32_t> ids;
        if (add_special && tokenizer.add_bos() && tokenizer.bos_id()) {
          ids.push_back(*tokenizer.bos_id());
        }
        for (int32_t t : tokenizer.encode(*content, /*parse_special=*/false)) ids.push_back(t);
        json tokens = json::array();
        for (int32_t t : ids) {
          if (with_pieces) {
            tokens.push_back({{"id", t}, {"piece", token_string(tokenizer.token_bytes(t))}});
          } else {
            tokens.push_back(t);
          }
        }
        res.set_content(json{{"tokens", std::move(tokens)}, {"count", ids.size()}}.dump(),
                        "application/json");
      });
  handle("POST", "/detokenize", "tokenize",
         [this, tokenizer_of](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const json body = parse_body(req);
           for (const auto& [key, value] : body.items()) {
             if (key != "tokens" && key != "model") {
               field_fail(key, fmt::format("unrecognized field '{}' (tokens, model)", key));
             }
           }
           const Tokenizer& tokenizer = tokenizer_of(who, body);
           auto it = body.find("tokens");
           if (it == body.end() || !it->is_array()) {
             field_fail("tokens", "'tokens' must be a list of token ids");
           }
           std::vector<int32_t> ids;
           for (const json& t : *it) {
             if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
                 t.get<int64_t>() >= tokenizer.vocab_size()) {
               field_fail("tokens", fmt::format("'tokens' must hold token ids from 0 to {}, got {}",
                                                tokenizer.vocab_size() - 1, t.dump()));
             }
             ids.push_back(t.get<int32_t>());
           }
           // Bytes of a character cut off at either end come out as U+FFFD, never raw.
           res.set_content(json{{"content", tokenizer.decode(ids)}}.dump(
                               -1, ' ', false, json::error_handler_t::replace),
                           "application/json");
         });
}

}  // namespace bitdelta
