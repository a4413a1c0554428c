#include "constrain/pda.h"

#include "constrain/json_string.h"
#include "constrain/number_range.h"
#include "util/error.h"

namespace bitdelta::constrain::detail {
namespace {

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Whitespace between JSON tokens, state in Frame::sub: spaces/tabs on this line (bits 0-5),
// a line break seen (bit 6), a '\r' seen (bit 7; only '\n' may follow as whitespace).
bool ws_step(uint16_t& sub, uint8_t c) {
  constexpr uint16_t kNewline = 1 << 6, kReturn = 1 << 7, kSpaces = 63;
  if (c == ' ' || c == '\t') {
    if ((sub & kReturn) || (sub & kSpaces) >= kMaxSpaces) return false;
    ++sub;
    return true;
  }
  if (c == '\r') {
    if (sub & (kNewline | kReturn)) return false;
    sub |= kReturn;
    return true;
  }
  if (sub & kNewline) return false;  // c == '\n'
  sub = kNewline;
  return true;
}

NumberState unpack_number(const Frame& f) {
  NumberState s;
  s.phase = uint8_t(f.phase);
  s.negative = f.sub & 1;
  s.leading_zero = f.sub & 2;
  s.int_digits = uint8_t(f.a);
  s.frac_digits = uint8_t(f.a >> 8);
  s.exp_digits = uint8_t(f.a >> 16);
  s.int_value = f.x;
  s.frac_value = f.y;
  return s;
}

void pack_number(const NumberState& s, Frame& f) {
  f.phase = s.phase;
  f.sub = uint16_t((s.negative ? 1 : 0) | (s.leading_zero ? 2 : 0));
  f.a = uint32_t(s.int_digits) | uint32_t(s.frac_digits) << 8 | uint32_t(s.exp_digits) << 16;
  f.x = s.int_value;
  f.y = s.frac_value;
}

uint32_t trie_child(const std::vector<TrieEdge>& next, uint8_t c) {
  for (const TrieEdge& e : next) {
    if (e.byte == c) return e.to;
  }
  return kNone;
}

uint64_t all_candidates(size_t count) {
  return count >= 64 ? ~uint64_t(0) : (uint64_t(1) << count) - 1;
}

}  // namespace

void Stacks::add(std::span<const Frame> s) {
  const size_t bytes = s.size() * sizeof(Frame);
  for (size_t i = 0; i < size(); ++i) {
    const auto t = (*this)[i];
    if (t.size() == s.size() && std::memcmp(t.data(), s.data(), bytes) == 0) return;
  }
  frames_.insert(frames_.end(), s.begin(), s.end());
  ends_.push_back(uint32_t(frames_.size()));
}

void Pda::initial(Stacks& out) const {
  out.clear();
  Frame root;
  root.node = graph_.root;
  out.add({&root, 1});
}

void Pda::step(const Stacks& in, uint8_t c, Stacks& out, bool literal_only) const {
  StackBuf s;
  for (size_t i = 0; i < in.size(); ++i) {
    s.load(in[i]);
    feed(s, c, out, literal_only);
  }
}

bool Pda::run(Stacks& state, std::string_view bytes, bool literal_only, Stacks& scratch) const {
  for (char ch : bytes) {
    scratch.clear();
    step(state, uint8_t(ch), scratch, literal_only);
    std::swap(state, scratch);
    if (state.empty()) return false;
  }
  return true;
}

bool Pda::accepts(std::span<const Frame> stack, std::string_view bytes, bool literal_only) const {
  thread_local Stacks state, scratch;
  state.clear();
  state.add(stack);
  return run(state, bytes, literal_only, scratch);
}

bool Pda::frame_can_end(const Frame& f) const {
  const Node& n = nodes_[f.node];
  switch (n.kind) {
    case NodeKind::kLiteral:
      return n.literal[f.a].terminal;
    case NodeKind::kNumber:
      return number_can_end(n.number, unpack_number(f));
    default:
      return false;  // other frames end eagerly, on their last byte
  }
}

bool Pda::can_end(std::span<const Frame> stack) const {
  StackBuf s;
  s.load(stack);
  while (true) {
    const Frame& f = s.top();
    if (nodes_[f.node].kind == NodeKind::kRoot) return f.phase == 1;
    if (!frame_can_end(f)) return false;
    --s.n;
    child_done(s);
  }
}

bool Pda::finished(std::span<const Frame> stack) const {
  return stack.size() == 1 && stack[0].phase == 1;
}

void Pda::close_top(StackBuf& s) const {
  --s.n;
  child_done(s);
}

void Pda::child_done(StackBuf& s) const {
  Frame& p = s.top();
  const Node& n = nodes_[p.node];
  switch (n.kind) {
    case NodeKind::kRoot:
      p.phase = 1;
      return;
    case NodeKind::kSequence:
      if (++p.a == n.children.size()) {
        --s.n;
        child_done(s);
      }
      return;
    case NodeKind::kObject:
      if (p.phase == kObjInKey) {
        p.phase = kObjColon;
        p.b = kNone;
      } else {
        p.phase = kObjAfterValue;
        p.a = p.b == kNone ? uint32_t(n.props.size()) : p.b + 1;
        p.b = 0;
      }
      p.sub = 0;
      return;
    case NodeKind::kArray: {
      uint32_t count = p.a + 1;
      if (n.max_items == kUnbounded) {
        // Past minItems and the prefix items, the count no longer changes what may follow.
        const uint32_t cap = std::max<uint32_t>(n.min_items, uint32_t(n.prefix_items.size()));
        count = std::min(count, cap);
      }
      p.a = count;
      p.phase = kArrAfterItem;
      p.sub = 0;
      return;
    }
    default:
      BD_CHECK(false, "node kind {} cannot hold a child", int(n.kind));
  }
}

void Pda::finish(StackBuf& s, Stacks& out) const {
  --s.n;
  child_done(s);
  out.add(s.frames());
}

void Pda::end_then_feed(const StackBuf& s, uint8_t c, Stacks& out, bool literal_only) const {
  StackBuf e;
  e.copy_from(s);
  --e.n;
  child_done(e);
  feed(e, c, out, literal_only);
}

void Pda::start(StackBuf& s, uint32_t node, uint8_t c, Stacks& out, bool literal_only) const {
  const Node& n = nodes_[node];
  if (!n.first.test(c)) return;
  if (n.kind != NodeKind::kChoice) {
    if (fits(s.n, node)) push_and_feed(s, node, c, out, literal_only);
    return;
  }
  uint32_t viable[64];
  uint32_t count = 0;
  for (uint32_t leaf : n.leaves) {
    if (nodes_[leaf].first.test(c) && fits(s.n, leaf)) {
      if (count == 64) {  // very wide anyOf: flush the ones gathered so far
        for (uint32_t i = 0; i < count; ++i) {
          StackBuf t;
          t.copy_from(s);
          push_and_feed(t, viable[i], c, out, literal_only);
        }
        count = 0;
      }
      viable[count++] = leaf;
    }
  }
  for (uint32_t i = 0; i + 1 < count; ++i) {
    StackBuf t;
    t.copy_from(s);
    push_and_feed(t, viable[i], c, out, literal_only);
  }
  if (count > 0) push_and_feed(s, viable[count - 1], c, out, literal_only);
}

void Pda::push_and_feed(StackBuf& s, uint32_t node, uint8_t c, Stacks& out,
                        bool literal_only) const {
  BD_CHECK(s.n < kMaxDepth);
  Frame& f = s.f[s.n++];
  f = Frame{};
  f.node = node;
  feed(s, c, out, literal_only);
}

void Pda::feed(StackBuf& s, uint8_t c, Stacks& out, bool literal_only) const {
  Frame& f = s.top();
  const Node& n = nodes_[f.node];
  switch (n.kind) {
    case NodeKind::kRoot:
      if (f.phase == 0) start(s, n.children[0], c, out, literal_only);
      return;
    case NodeKind::kSequence:
      start(s, n.children[f.a], c, out, literal_only);
      return;
    case NodeKind::kLiteral:
      return feed_literal(s, n, c, out, literal_only);
    case NodeKind::kString:
      if (!literal_only) feed_string(s, n, c, out);
      return;
    case NodeKind::kNumber:
      if (!literal_only) feed_number(s, n, c, out);
      return;
    case NodeKind::kObject:
      if (!literal_only) feed_object(s, n, c, out);
      return;
    case NodeKind::kArray:
      if (!literal_only) feed_array(s, n, c, out);
      return;
    case NodeKind::kChoice:
      BD_CHECK(false, "a choice node on the stack");
  }
}

void Pda::feed_literal(StackBuf& s, const Node& n, uint8_t c, Stacks& out,
                       bool literal_only) const {
  if (literal_only && !n.raw_text) return;
  Frame& f = s.top();
  // A terminal with children (enum [1, 12] after "1"): the value may also end here.
  if (n.literal[f.a].terminal) end_then_feed(s, c, out, literal_only);
  const uint32_t next = trie_child(n.literal[f.a].next, c);
  if (next == kNone) return;
  f.a = next;
  if (n.literal[next].terminal && n.literal[next].next.empty()) {
    finish(s, out);
  } else {
    out.add(s.frames());
  }
}

void Pda::feed_string(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const {
  Frame& f = s.top();
  if (f.phase == 0) {
    if (c != '"') return;
    f.phase = 1;
    f.sub = kStrChar;
    f.x = all_candidates(n.excluded.size());
    out.add(s.frames());
    return;
  }
  const StringStep st = string_step(uint8_t(f.sub), c);
  if (st.kind == StringStep::kReject) return;
  if (st.kind == StringStep::kClose) {
    if (f.a < n.min_length) return;
    for (uint64_t bits = f.x; bits != 0; bits &= bits - 1) {
      if (n.excluded[__builtin_ctzll(bits)].size() == f.y) return;  // a declared name
    }
    finish(s, out);
    return;
  }
  if (st.counts && f.a >= n.max_length) return;
  if (f.x != 0) {
    // Still spelling one of the excluded names: compare raw bytes, so no escapes until it differs.
    if (c == '\\') return;
    uint64_t keep = 0;
    for (uint64_t bits = f.x; bits != 0; bits &= bits - 1) {
      const int i = __builtin_ctzll(bits);
      const std::string& name = n.excluded[size_t(i)];
      if (name.size() > f.y && uint8_t(name[f.y]) == c) keep |= uint64_t(1) << i;
    }
    f.x = keep;
    f.y = keep != 0 ? f.y + 1 : 0;
  }
  f.a += st.counts;
  if (n.max_length == kUnbounded && f.a > n.min_length) f.a = n.min_length;
  f.sub = st.next;
  out.add(s.frames());
}

void Pda::feed_number(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const {
  Frame& f = s.top();
  NumberState st = unpack_number(f);
  if (st.phase != kNumStart && number_can_end(n.number, st)) end_then_feed(s, c, out, false);
  if (!number_step(n.number, st, c)) return;
  pack_number(st, f);
  if (number_can_continue(n.number, st)) {
    out.add(s.frames());
  } else {
    BD_CHECK(number_can_end(n.number, st), "a number prefix with no way to finish");
    finish(s, out);
  }
}

bool Pda::property_allowed(const Node& n, uint32_t j, uint32_t next, uint32_t height) const {
  if (j < next) return false;
  const uint32_t required = n.next_required[next];
  if (required < n.props.size() && j > required) return false;  // would skip a required one
  return n.props[j].required || fits(height, n.props[j].value);
}

bool Pda::key_allowed(const Node& n, uint32_t trie_node, uint32_t next, uint32_t height) const {
  for (uint32_t j : n.keys[trie_node].props_below) {
    if (property_allowed(n, j, next, height)) return true;
  }
  return false;
}

bool Pda::additional_allowed(const Node& n, uint32_t next, uint32_t height) const {
  return n.additional_key != kNone && n.next_required[next] == n.props.size() &&
         height + 1 <= kMaxDepth && fits(height, n.additional);
}

bool Pda::more_keys(const Node& n, uint32_t next, uint32_t height) const {
  if (additional_allowed(n, next, height)) return true;
  return !n.keys.empty() && key_allowed(n, 0, next, height);
}

void Pda::start_key(StackBuf& s, const Node& n, Stacks& out) const {
  Frame& f = s.top();
  const bool additional = additional_allowed(n, f.a, s.n);
  const uint32_t t = n.keys.empty() ? kNone : trie_child(n.keys[0].next, '"');
  if (t != kNone && key_allowed(n, t, f.a, s.n)) {
    StackBuf d;
    d.copy_from(s);
    d.top().phase = kObjDeclaredKey;
    d.top().b = t;
    d.top().sub = 0;
    out.add(d.frames());
  }
  if (additional) {
    f.phase = kObjInKey;
    f.sub = 0;
    push_and_feed(s, n.additional_key, '"', out, false);
  }
}

void Pda::feed_object(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const {
  Frame& f = s.top();
  const uint32_t count = uint32_t(n.props.size());
  switch (f.phase) {
    case kObjFirst:
    case kObjKeyStart:
    case kObjColon:
    case kObjValue:
    case kObjAfterValue:
      if (is_ws(c)) {
        if (ws_step(f.sub, c)) out.add(s.frames());
        return;
      }
      break;
    default:
      break;
  }
  switch (f.phase) {
    case kObjOpen:
      if (c == '{') {
        f.phase = kObjFirst;
        out.add(s.frames());
      }
      return;
    case kObjFirst:
      if (c == '}') {
        if (n.next_required[f.a] == count) finish(s, out);
      } else if (c == '"') {
        start_key(s, n, out);
      }
      return;
    case kObjKeyStart:
      if (c == '"') start_key(s, n, out);
      return;
    case kObjDeclaredKey: {
      const uint32_t t = trie_child(n.keys[f.b].next, c);
      if (t == kNone || !key_allowed(n, t, f.a, s.n)) return;
      f.b = t;
      if (n.keys[t].prop != kNone) {  // the closing quote: keys never extend one another
        f.phase = kObjColon;
        f.b = n.keys[t].prop;
        f.sub = 0;
      }
      out.add(s.frames());
      return;
    }
    case kObjColon:
      if (c == ':') {
        f.phase = kObjValue;
        f.sub = 0;
        out.add(s.frames());
      }
      return;
    case kObjValue: {
      const uint32_t value = f.b == kNone ? n.additional : n.props[f.b].value;
      f.phase = kObjInValue;
      f.sub = 0;
      start(s, value, c, out, false);
      return;
    }
    case kObjAfterValue:
      if (c == ',') {
        if (more_keys(n, f.a, s.n)) {
          f.phase = kObjKeyStart;
          f.sub = 0;
          out.add(s.frames());
        }
      } else if (c == '}') {
        if (n.next_required[f.a] == count) finish(s, out);
      }
      return;
    default:
      return;
  }
}

bool Pda::can_add_item(const Node& n, uint32_t count, uint32_t height) const {
  if (count >= n.max_items) return false;
  const uint32_t item = n.item_node(count);
  if (item == kNone) return false;
  return count < n.min_items || fits(height, item);
}

void Pda::feed_array(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const {
  Frame& f = s.top();
  if (f.phase != kArrOpen && is_ws(c)) {
    if (ws_step(f.sub, c)) out.add(s.frames());
    return;
  }
  switch (f.phase) {
    case kArrOpen:
      if (c == '[') {
        f.phase = kArrFirst;
        out.add(s.frames());
      }
      return;
    case kArrFirst:
      if (c == ']') {
        if (n.min_items == 0) finish(s, out);
        return;
      }
      if (!can_add_item(n, 0, s.n)) return;
      [[fallthrough]];
    case kArrAfterComma:
      f.phase = kArrInItem;
      f.sub = 0;
      start(s, n.item_node(f.a), c, out, false);
      return;
    case kArrAfterItem:
      if (c == ',') {
        if (can_add_item(n, f.a, s.n)) {
          f.phase = kArrAfterComma;
          f.sub = 0;
          out.add(s.frames());
        }
      } else if (c == ']') {
        if (f.a >= n.min_items) finish(s, out);
      }
      return;
    default:
      return;
  }
}

}  // namespace bitdelta::constrain::detail
