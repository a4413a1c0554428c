// Tool calls in a model's output, as the chat template's format writes them (Qwen3:
// "<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>", any number; Llama 3.1: the
// whole reply {"name": "f", "parameters": {...}}), turned into OpenAI's
// message.tool_calls, incrementally so that a stream can send them as OpenAI does: a first delta
// with the call's id and name, then pieces of its arguments.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_template.h"

namespace bitdelta {

class ToolCallParser {
 public:
  struct Event {
    enum class Kind { kText, kCallStart, kArguments, kCallEnd };
    Kind kind = Kind::kText;
    int call = -1;     // kCallStart, kArguments: which call of this output (0, 1, ...)
    // kText: content; kCallStart: the function's name; kArguments: a piece; kCallEnd: nothing
    // (the call's arguments are whole).
    std::string text;
  };

  // `syntax`: how the template's model writes calls; `names`: the functions that may be called.
  ToolCallParser(const ToolCallSyntax& syntax, std::vector<std::string> names);

  // The events that `piece` (the next text of the output) completes.
  std::vector<Event> feed(std::string_view piece);
  // At the end of the output: what is still held back. A call that never closed is given back as
  // text (its start already went out as events only when its name and arguments had begun).
  std::vector<Event> finish();

  int calls() const { return calls_; }

 private:
  enum class State { kStart, kText, kHeader, kArguments, kTail, kRaw };
  void step(std::vector<Event>& out);
  void emit_text(std::vector<Event>& out, std::string text);
  bool header_complete(std::string_view buffer, std::string* name, size_t* used,
                       bool* possible) const;
  bool raw_call(std::string_view body, std::string* name, std::string* arguments) const;

  std::string open_, close_, key_;
  bool whole_reply_;
  std::vector<std::string> names_;
  State state_;
  std::string buffer_;      // text not yet turned into events
  std::string pending_ws_;  // whitespace after a call, dropped unless text follows
  std::string gap_;  // whitespace before the call being read, given back with it if it is not one
  int calls_ = 0;
  // kArguments: the JSON value's scanner.
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false, started_ = false;
};

}  // namespace bitdelta
