#include "serve/tool_calls.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace bitdelta {

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// Length of the longest suffix of `text` that is a proper prefix of `marker`.
size_t partial_marker(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(marker.size() - 1, text.size()); n > 0; --n) {
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

// Matches `pattern` (whose spaces stand for optional whitespace) in `text` from `*at`: true when
// it matched whole (advancing *at); false with *possible when the text ran out first.
bool expect(std::string_view text, size_t* at, const std::string& pattern, bool* possible) {
  size_t i = *at;
  for (char p : pattern) {
    if (p == ' ') {
      while (i < text.size() && is_space(text[i])) ++i;
      continue;
    }
    if (i == text.size()) {
      *possible = true;
      return false;
    }
    if (text[i] != p) {
      *possible = false;
      return false;
    }
    ++i;
  }
  *at = i;
  return true;
}

}  // namespace

ToolCallParser::ToolCallParser(const ToolCallSyntax& syntax, std::vector<std::string> names)
    : open_(syntax.open),
      close_(syntax.close),
      key_(syntax.arguments_key),
      whole_reply_(syntax.whole_reply),
      names_(std::move(names)),
      state_(syntax.whole_reply ? State::kStart : State::kText) {}

std::vector<ToolCallParser::Event> ToolCallParser::feed(std::string_view piece) {
  std::vector<Event> out;
  buffer_ += piece;
  step(out);
  return out;
}

void ToolCallParser::emit_text(std::vector<Event>& out, std::string text) {
  if (text.empty()) return;
  if (calls_ > 0) {  // between and after calls, whitespace alone is not content
    pending_ws_ += text;
    if (std::all_of(pending_ws_.begin(), pending_ws_.end(), is_space)) return;
    text = std::move(pending_ws_);
    pending_ws_.clear();
  }
  if (!out.empty() && out.back().kind == Event::Kind::kText) {
    out.back().text += text;
  } else {
    out.push_back({Event::Kind::kText, -1, std::move(text)});
  }
}

// `{"name": "f", "arguments": ` with any whitespace, then the first character of the arguments.
bool ToolCallParser::header_complete(std::string_view b, std::string* name, size_t* used,
                                     bool* possible) const {
  size_t at = 0;
  *possible = true;
  if (!expect(b, &at, " { \"name\" : \"", possible)) return false;
  const size_t end = b.find('"', at);
  if (end == std::string_view::npos) {
    *possible = b.find('\\', at) == std::string_view::npos;  // names have no escapes
    return false;
  }
  *name = std::string(b.substr(at, end - at));
  at = end + 1;
  if (!expect(b, &at, " , \"" + key_ + "\" : ", possible)) return false;
  if (at == b.size()) {
    *possible = true;
    return false;
  }
  *used = at;
  return true;
}

bool ToolCallParser::raw_call(std::string_view body, std::string* name,
                              std::string* arguments) const {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string() ||
      !j.contains(key_)) {
    return false;
  }
  *name = j["name"].get<std::string>();
  if (std::find(names_.begin(), names_.end(), *name) == names_.end()) return false;
  const auto& args = j[key_];
  if (args.is_string()) {
    if (!nlohmann::json::parse(args.get<std::string>(), nullptr, false).is_object()) return false;
    *arguments = args.get<std::string>();
  } else if (args.is_object()) {
    *arguments = args.dump();
  } else {
    return false;
  }
  return true;
}

void ToolCallParser::step(std::vector<Event>& out) {
  while (true) {
    switch (state_) {
      case State::kStart: {  // a reply that is one call starts with '{' (after a python tag)
        static constexpr std::string_view kPythonTag = "<|python_tag|>";
        size_t at = 0;
        while (at < buffer_.size() && is_space(buffer_[at])) ++at;
        const std::string_view rest = std::string_view(buffer_).substr(at);
        if (rest.size() < kPythonTag.size() && kPythonTag.substr(0, rest.size()) == rest) return;
        if (rest.substr(0, kPythonTag.size()) == kPythonTag) {
          buffer_.erase(0, at + kPythonTag.size());
          continue;
        }
        if (rest.empty()) return;
        if (rest[0] == '{') {
          state_ = State::kHeader;
          continue;
        }
        state_ = State::kText;
        continue;
      }
      case State::kText: {
        if (whole_reply_) {  // no call can start after the reply's first character
          emit_text(out, std::move(buffer_));
          buffer_.clear();
          return;
        }
        const size_t p = buffer_.find(open_);
        if (p != std::string::npos) {
          // Whitespace just before a call is not content.
          size_t end = p;
          while (end > 0 && is_space(buffer_[end - 1])) --end;
          emit_text(out, buffer_.substr(0, end));
          gap_ = buffer_.substr(end, p - end);  // given back with the call if it is not one
          buffer_.erase(0, p + open_.size());
          state_ = State::kHeader;
          continue;
        }
        // Hold back what may be the start of a call: a partial marker and the whitespace before.
        size_t keep = partial_marker(buffer_, open_);
        size_t cut = buffer_.size() - keep;
        while (cut > 0 && is_space(buffer_[cut - 1])) --cut;
        emit_text(out, buffer_.substr(0, cut));
        buffer_.erase(0, cut);
        return;
      }
      case State::kHeader: {
        std::string name;
        size_t used = 0;
        bool possible = true;
        // Arguments that are not an object (a string of JSON text, a scalar) are parsed whole.
        if (header_complete(buffer_, &name, &used, &possible) && buffer_[used] == '{' &&
            std::find(names_.begin(), names_.end(), name) != names_.end()) {
          out.push_back({Event::Kind::kCallStart, calls_++, name});
          gap_.clear();
          buffer_.erase(0, used);
          state_ = State::kArguments;
          depth_ = 0;
          in_string_ = escaped_ = started_ = false;
          continue;
        }
        if (whole_reply_) {
          if (possible && used == 0) return;
          state_ = State::kRaw;  // another shape: parsed whole at the end of the reply
          return;
        }
        if (possible && used == 0 && buffer_.find(close_) == std::string::npos) return;
        state_ = State::kRaw;  // another shape (or an unknown name): parse it whole at its end
        continue;
      }
      case State::kArguments: {
        size_t i = 0;
        bool done = false;
        for (; i < buffer_.size() && !done; ++i) {
          const char c = buffer_[i];
          if (!started_) {  // always '{' (kHeader sends any other start to kRaw)
            started_ = true;
            depth_ = 1;
            continue;
          }
          // A spelled-out call whose arguments never balance must not swallow its closing
          // marker and everything after it.
          if (!whole_reply_ && !in_string_ && buffer_.compare(i, close_.size(), close_) == 0) {
            done = true;
            break;
          }
          if (in_string_) {
            if (escaped_)
              escaped_ = false;
            else if (c == '\\')
              escaped_ = true;
            else if (c == '"') {
              in_string_ = false;
              done = depth_ == 0;
            }
          } else if (c == '"') {
            in_string_ = true;
          } else if (c == '{' || c == '[') {
            ++depth_;
          } else if (c == '}' || c == ']') {
            done = --depth_ == 0;
          }
        }
        // Hold back what may be the start of the closing marker.
        const size_t keep = done || whole_reply_ ? 0 : partial_marker(buffer_.substr(0, i), close_);
        if (i - keep > 0) {
          out.push_back({Event::Kind::kArguments, calls_ - 1, buffer_.substr(0, i - keep)});
        }
        buffer_.erase(0, i - keep);
        if (!done) return;
        state_ = State::kTail;
        continue;
      }
      case State::kTail: {
        // Whatever closes the call (" }\n" in the template's format) up to the closing marker,
        // or, for a whole-reply call, the object's closing brace.
        const size_t p = whole_reply_ ? buffer_.find('}') : buffer_.find(close_);
        if (p == std::string::npos) return;
        buffer_.erase(0, p + (whole_reply_ ? 1 : close_.size()));
        out.push_back({Event::Kind::kCallEnd, calls_ - 1, ""});
        state_ = State::kText;
        continue;
      }
      case State::kRaw: {
        if (whole_reply_) return;  // the whole reply is parsed at finish()
        const size_t p = buffer_.find(close_);
        if (p == std::string::npos) return;
        std::string name, arguments;
        if (raw_call(std::string_view(buffer_).substr(0, p), &name, &arguments)) {
          out.push_back({Event::Kind::kCallStart, calls_++, name});
          out.push_back({Event::Kind::kArguments, calls_ - 1, arguments});
          out.push_back({Event::Kind::kCallEnd, calls_ - 1, ""});
        } else {
          emit_text(out, gap_ + open_ + buffer_.substr(0, p + close_.size()));
        }
        gap_.clear();
        buffer_.erase(0, p + close_.size());
        state_ = State::kText;
        continue;
      }
    }
  }
}

std::vector<ToolCallParser::Event> ToolCallParser::finish() {
  std::vector<Event> out;
  switch (state_) {
    case State::kStart:
    case State::kText:
      emit_text(out, std::move(buffer_));
      break;
    case State::kHeader:
    case State::kRaw: {
      std::string name, arguments;
      if (whole_reply_ && raw_call(buffer_, &name, &arguments)) {
        out.push_back({Event::Kind::kCallStart, calls_++, name});
        out.push_back({Event::Kind::kArguments, calls_ - 1, arguments});
        out.push_back({Event::Kind::kCallEnd, calls_ - 1, ""});
        break;
      }
      emit_text(out, gap_ + open_ + buffer_);  // a call that never completed is text after all
      break;
    }
    case State::kArguments:
      if (!buffer_.empty()) out.push_back({Event::Kind::kArguments, calls_ - 1, buffer_});
      break;
    case State::kTail: {
      // The call's closing never came: what follows its arguments' end is text.
      size_t at = 0;
      while (at < buffer_.size() && is_space(buffer_[at])) ++at;
      if (at < buffer_.size() && buffer_[at] == '}') ++at;
      out.push_back({Event::Kind::kCallEnd, calls_ - 1, ""});
      emit_text(out, buffer_.substr(at));
      break;
    }
  }
  buffer_.clear();
  state_ = State::kText;
  return out;
}

}  // namespace bitdelta
