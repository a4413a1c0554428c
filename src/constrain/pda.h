// The pushdown automaton that runs a compiled grammar one byte at a time.
//
// A state is a set of stacks (usually one; more while anyOf alternatives or an optional property
// and an additional one are both still possible). A stack is a few 32-byte frames, one per open
// node: the root, a sequence, an object, the string being written, ... Frames hold small counters
// only (the property reached, item count, characters so far, the digits of a bounded number), so
// a stack is its own cache key: equal stacks allow equal tokens. Counters that no longer matter
// are clamped (the length of a string past its minLength when there is no maxLength, the item
// count of an array past minItems), so that long strings and arrays revisit the same states.
//
// Frames end as soon as nothing more can be added to them; a frame that could end or go on (a
// number, an enum with one value a prefix of another) stays, and both ways are tried on the next
// byte. Internal to src/constrain.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "constrain/grammar_nodes.h"

namespace bitdelta::constrain::detail {

struct Frame {
  uint32_t node = 0;
  uint16_t phase = 0;
  uint16_t sub = 0;
  uint32_t a = 0;
  uint32_t b = 0;
  uint64_t x = 0;
  uint64_t y = 0;
};
static_assert(sizeof(Frame) == 32, "frames are compared and hashed as bytes");

// One stack being worked on, bottom first.
struct StackBuf {
  uint32_t n = 0;
  Frame f[kMaxDepth];

  StackBuf() = default;
  StackBuf(const StackBuf&) = delete;
  StackBuf& operator=(const StackBuf&) = delete;
  void copy_from(const StackBuf& o) {
    n = o.n;
    std::memcpy(f, o.f, n * sizeof(Frame));
  }
  void load(std::span<const Frame> s) {
    n = uint32_t(s.size());
    std::memcpy(f, s.data(), s.size() * sizeof(Frame));
  }
  Frame& top() { return f[n - 1]; }
  std::span<const Frame> frames() const { return {f, n}; }
};

// A set of stacks, stored flat.
class Stacks {
 public:
  void clear() {
    frames_.clear();
    ends_.clear();
  }
  bool empty() const { return ends_.empty(); }
  size_t size() const { return ends_.size(); }
  std::span<const Frame> operator[](size_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends_[i - 1];
    return {frames_.data() + begin, ends_[i] - begin};
  }
  void add(std::span<const Frame> s);  // ignored when already present

 private:
  std::vector<Frame> frames_;
  std::vector<uint32_t> ends_;
};

class Pda {
 public:
  explicit Pda(const GrammarGraph& graph) : graph_(graph), nodes_(graph.nodes) {}

  const GrammarGraph& graph() const { return graph_; }
  // Before the first byte.
  void initial(Stacks& out) const;
  // Every stack `in` reaches with byte `c`, appended to `out` (nothing: `c` is not allowed).
  // With `literal_only`, only grammar text (kLiteral with raw_text) may take the byte: used for
  // special tokens, which may stand only for a grammar's literal text.
  void step(const Stacks& in, uint8_t c, Stacks& out, bool literal_only = false) const;
  // `state` after `bytes`; false (state unspecified) when some byte is not allowed.
  bool run(Stacks& state, std::string_view bytes, bool literal_only, Stacks& scratch) const;
  // Same from one stack.
  bool accepts(std::span<const Frame> stack, std::string_view bytes, bool literal_only) const;

  // The text so far is a whole document: an end token may come.
  bool can_end(std::span<const Frame> stack) const;
  // Nothing but an end token may come.
  bool finished(std::span<const Frame> stack) const;
  // `s` (whose top is a string frame) after that string's closing quote, without the checks.
  void close_top(StackBuf& s) const;

  // Feeds byte `c` to the top of `s` (which it may change) and adds the resulting stacks to out.
  void feed(StackBuf& s, uint8_t c, Stacks& out, bool literal_only) const;

 private:
  void start(StackBuf& s, uint32_t node, uint8_t c, Stacks& out, bool literal_only) const;
  void push_and_feed(StackBuf& s, uint32_t node, uint8_t c, Stacks& out, bool literal_only) const;
  void child_done(StackBuf& s) const;
  void finish(StackBuf& s, Stacks& out) const;  // pops the top and adds the result
  void end_then_feed(const StackBuf& s, uint8_t c, Stacks& out, bool literal_only) const;
  bool frame_can_end(const Frame& f) const;

  void feed_literal(StackBuf& s, const Node& n, uint8_t c, Stacks& out, bool literal_only) const;
  void feed_string(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const;
  void feed_number(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const;
  void feed_object(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const;
  void feed_array(StackBuf& s, const Node& n, uint8_t c, Stacks& out) const;
  void start_key(StackBuf& s, const Node& n, Stacks& out) const;

  bool fits(uint32_t height, uint32_t node) const {
    return height + nodes_[node].min_depth <= kMaxDepth;
  }
  bool property_allowed(const Node& n, uint32_t j, uint32_t next, uint32_t height) const;
  bool key_allowed(const Node& n, uint32_t trie_node, uint32_t next, uint32_t height) const;
  bool additional_allowed(const Node& n, uint32_t next, uint32_t height) const;
  bool more_keys(const Node& n, uint32_t next, uint32_t height) const;
  bool can_add_item(const Node& n, uint32_t count, uint32_t height) const;

  const GrammarGraph& graph_;
  const std::vector<Node>& nodes_;
};

// Frame phases of objects and arrays (Frame::phase).
enum ObjectPhase : uint16_t {
  kObjOpen,         // expects '{'
  kObjFirst,        // after '{': whitespace, a key or '}'
  kObjKeyStart,     // after ',': whitespace, then a key
  kObjDeclaredKey,  // inside a declared key; b = key trie node
  kObjInKey,        // an additional key's string frame is above
  kObjColon,        // after a key: whitespace, ':'; b = property (kNone: additional)
  kObjValue,        // after ':': whitespace, then the value
  kObjInValue,      // the value's frame is above; b = property (kNone: additional)
  kObjAfterValue,   // whitespace, ',' or '}'; a = next property index
};
enum ArrayPhase : uint16_t {
  kArrOpen,        // expects '['
  kArrFirst,       // after '[': whitespace, an item or ']'
  kArrAfterComma,  // whitespace, then an item
  kArrInItem,      // the item's frame is above
  kArrAfterItem,   // whitespace, ',' or ']'; a = items so far
};

}  // namespace bitdelta::constrain::detail
