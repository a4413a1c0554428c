#include "tokenizer/pipeline.h"

#include <algorithm>
#include <cstdlib>

namespace bitdelta::tok {

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// Splits span [begin, end) of `text` around the matches of `regex`, appending the resulting spans
// per HF's SplitDelimiterBehavior.
void split_span(const std::string& text, uint32_t begin, uint32_t end, const Regex& regex,
                SplitBehavior behavior, std::vector<std::pair<uint32_t, uint32_t>>& out) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  struct Part {
    uint32_t begin, end;
    bool is_match;
  };
  thread_local std::vector<Part> parts;
  matches.clear();
  regex.find_all(std::string_view(text).substr(begin, end - begin), matches);
  if (behavior == SplitBehavior::kIsolated) {
    uint32_t pos = begin;
    for (auto [mb, me] : matches) {
      auto b = begin + uint32_t(mb), e = begin + uint32_t(me);
      if (b > pos) out.emplace_back(pos, b);
      out.emplace_back(b, e);
      pos = e;
    }
    if (pos < end) out.emplace_back(pos, end);
    return;
  }
  parts.clear();
  uint32_t pos = begin;
  for (auto [mb, me] : matches) {
    auto b = begin + uint32_t(mb), e = begin + uint32_t(me);
    if (b > pos) parts.push_back({pos, b, false});
    parts.push_back({b, e, true});
    pos = e;
  }
  if (pos < end) parts.push_back({pos, end, false});
  switch (behavior) {
    case SplitBehavior::kIsolated:
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.is_match) out.emplace_back(p.begin, p.end);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      size_t first = out.size();
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && out.size() > first) {
          out.back().second = p.end;
        } else {
          out.emplace_back(p.begin, p.end);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      size_t first = out.size();
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && out.size() > first) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin() + std::ptrdiff_t(first), out.end());
      break;
    }
  }
}

}  // namespace

std::string_view Normalizer::apply(std::string_view text, std::string& storage) const {
  bool owned = false;
  for (const NormalizerStep& step : steps_) {
    std::string_view current = owned ? std::string_view(storage) : text;
    switch (step.kind) {
      case NormalizerStep::Kind::kUnicode:
        // ASCII is invariant under every normalization form.
        if (is_ascii(current)) continue;
        storage = unicode_normalize(current, step.form);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (current.empty()) continue;
        storage = step.text + std::string(current);
        break;
      case NormalizerStep::Kind::kReplace:
        if (current.find(step.text) == std::string_view::npos) continue;
        if (!owned) storage.assign(current);
        replace_all(storage, step.text, step.replacement);
        break;
    }
    owned = true;
  }
  return owned ? std::string_view(storage) : text;
}

bool PreTokenizer::has_byte_level() const {
  return std::any_of(steps_.begin(), steps_.end(), [](const PreTokenizerStep& s) {
    return s.kind == PreTokenizerStep::Kind::kByteLevel;
  });
}

void PreTokenizer::split(std::string_view text, bool at_text_start, Pieces& out) const {
  out.text.assign(text);
  out.spans.clear();
  if (!text.empty()) out.spans.emplace_back(0, uint32_t(text.size()));
  thread_local std::vector<std::pair<uint32_t, uint32_t>> next;
  for (const PreTokenizerStep& step : steps_) {
    next.clear();
    switch (step.kind) {
      case PreTokenizerStep::Kind::kSplit:
        for (auto [b, e] : out.spans) split_span(out.text, b, e, *step.regex, step.behavior, next);
        break;
      case PreTokenizerStep::Kind::kByteLevel: {
        if (step.add_prefix_space) {
          // Rebuild the buffer with a space in front of every word that lacks one.
          std::string rebuilt;
          std::vector<std::pair<uint32_t, uint32_t>> spans;
          for (auto [b, e] : out.spans) {
            auto start = uint32_t(rebuilt.size());
            if (out.text[b] != ' ') rebuilt.push_back(' ');
            rebuilt.append(out.text, b, e - b);
            spans.emplace_back(start, uint32_t(rebuilt.size()));
          }
          out.text = std::move(rebuilt);
          out.spans = std::move(spans);
        }
        if (!step.regex) continue;
        for (auto [b, e] : out.spans) {
          split_span(out.text, b, e, *step.regex, SplitBehavior::kIsolated, next);
        }
        break;
      }
      case PreTokenizerStep::Kind::kMetaspace: {
        std::string rebuilt;
        std::vector<std::pair<uint32_t, uint32_t>> spans;
        for (size_t i = 0; i < out.spans.size(); ++i) {
          auto [b, e] = out.spans[i];
          std::string word(out.text, b, e - b);
          replace_all(word, " ", step.replacement);
          bool starts_with_marker = word.compare(0, step.replacement.size(), step.replacement) == 0;
          bool first = at_text_start && b == 0;
          if (!starts_with_marker && (step.prepend_scheme == PrependScheme::kAlways ||
                                      (step.prepend_scheme == PrependScheme::kFirst && first))) {
            word.insert(0, step.replacement);
          }
          auto start = uint32_t(rebuilt.size());
          rebuilt += word;
          spans.emplace_back(start, uint32_t(rebuilt.size()));
        }
        out.text = std::move(rebuilt);
        out.spans = std::move(spans);
        if (!step.regex) continue;
        for (auto [b, e] : out.spans) {
          split_span(out.text, b, e, *step.regex, SplitBehavior::kMergedWithNext, next);
        }
        break;
      }
    }
    out.spans.swap(next);
  }
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  for (const DecoderStep& step : steps_) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) {
          size_t mark = bytes.size();
          if (!byte_level_decode(t, bytes)) {
            bytes.resize(mark);
            bytes += t;
          }
        }
        tokens.assign(1, utf8_lossy(bytes));
        break;
      }
      case DecoderStep::Kind::kReplace:
        for (std::string& t : tokens) replace_all(t, step.pattern, step.replacement);
        break;
      case DecoderStep::Kind::kByteFallback: {
        std::vector<std::string> merged;
        std::string pending;
        size_t pending_count = 0;
        auto flush = [&] {
          if (pending_count == 0) return;
          if (is_valid_utf8(pending)) {
            merged.push_back(pending);
          } else {
            // HF emits one U+FFFD per byte of an invalid run (not per maximal subpart).
            for (size_t k = 0; k < pending_count; ++k) merged.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
          pending_count = 0;
        };
        for (std::string& t : tokens) {
          auto hex = [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
          };
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) &&
              hex(t[4])) {
            pending.push_back(char(std::stoi(t.substr(3, 2), nullptr, 16)));
            ++pending_count;
          } else {
            flush();
            merged.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(merged);
        break;
      }
      case DecoderStep::Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Kind::kStrip: {
        const std::string& c = step.strip_char;
        for (std::string& t : tokens) {
          size_t cut_front = 0;
          for (int k = 0; k < step.strip_start && t.compare(cut_front, c.size(), c) == 0; ++k) {
            cut_front += c.size();
          }
          size_t end = t.size();
          for (int k = 0; k < step.strip_stop && end >= cut_front + c.size() &&
                          t.compare(end - c.size(), c.size(), c) == 0;
               ++k) {
            end -= c.size();
          }
          t = t.substr(cut_front, end - cut_front);
        }
        break;
      }
      case DecoderStep::Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          replace_all(tokens[i], step.replacement, " ");
          if (i == 0 && step.prepend && !tokens[i].empty() && tokens[i][0] == ' ') {
            tokens[i].erase(0, 1);
          }
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::string Decoder::decode_piece(const std::string& token) const {
  std::string out = token;
  for (const DecoderStep& step : steps_) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel: {
        std::string bytes;
        if (byte_level_decode(out, bytes)) out = std::move(bytes);
        break;
      }
      case DecoderStep::Kind::kReplace:
        replace_all(out, step.pattern, step.replacement);
        break;
      case DecoderStep::Kind::kByteFallback:
        if (out.size() == 6 && out.compare(0, 3, "<0x") == 0 && out[5] == '>') {
          out = std::string(1, char(std::strtol(out.substr(3, 2).c_str(), nullptr, 16)));
        }
        break;
      case DecoderStep::Kind::kMetaspace:
        replace_all(out, step.replacement, " ");
        break;
      case DecoderStep::Kind::kFuse:
      case DecoderStep::Kind::kStrip:
        break;
    }
  }
  return out;
}

std::pair<std::string, int> Decoder::leading_strip() const {
  for (const DecoderStep& step : steps_) {
    if (step.kind == DecoderStep::Kind::kStrip && step.strip_start > 0) {
      return {step.strip_char, step.strip_start};
    }
    if (step.kind == DecoderStep::Kind::kMetaspace && step.prepend) return {" ", 1};
  }
  return {"", 0};
}

}  // namespace bitdelta::tok
