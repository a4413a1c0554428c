// Tool calls in a model's output, as the chat template's format writes them (Qwen3:
// "<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>"), turned into OpenAI's
// message.tool_calls, incrementally so that a stream can send them as OpenAI does: a first delta
// with the call's id and name, then pieces of its arguments.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bitdelta {

class ToolCallParser {
 public:
  struct Event {
    enum class Kind { kText, kCallStart, kArguments };
    Kind kind = Kind::kText;
    int call = -1;     // kCallStart, kArguments: which call of this output (0, 1, ...)
    std::string text;  // kText: content; kCallStart: the function's name; kArguments: a piece
  };

  // `open`/`close`: the template's tool-call markers; `names`: the functions that may be called.
  ToolCallParser(std::string_view open, std::string_view close, std::vector<std::string> names);

  // The events that `piece` (the next text of the output) completes.
  std::vector<Event> feed(std::string_view piece);
  // At the end of the output: what is still held back. A call that never closed is given back as
  // text (its start already went out as events only when its name and arguments had begun).
  std::vector<Event> finish();

  int calls() const { return calls_; }

 private:
  enum class State { kText, kHeader, kArguments, kTail, kRaw };
  void step(std::vector<Event>& out);
  void emit_text(std::vector<Event>& out, std::string text);
  bool header_complete(std::string_view buffer, std::string* name, size_t* used,
                       bool* possible) const;
  bool raw_call(std::string_view body, std::string* name, std::string* arguments) const;

  std::string open_, close_;
  std::vector<std::string> names_;
  State state_ = State::kText;
  std::string buffer_;      // text not yet turned into events
  std::string pending_ws_;  // whitespace after a call, dropped unless text follows
  int calls_ = 0;
  // kArguments: the JSON value's scanner.
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false, started_ = false;
};

}  // namespace bitdelta
