// The compiled form of a grammar: a graph of nodes, each one JSON value shape or one stretch of
// exact text, walked byte by byte by the pushdown automaton in pda.h. Internal to src/constrain;
// users see Grammar (grammar.h).
#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "constrain/number_range.h"

namespace bitdelta::constrain::detail {

// Deepest stack the automaton builds: the root frame, a sequence, and one frame per open JSON
// container, string, number or literal. Deeper nesting is never offered, so a model cannot nest
// without end; a schema whose smallest instance needs more is refused when compiled.
inline constexpr uint32_t kMaxDepth = 40;
inline constexpr uint32_t kUnbounded = UINT32_MAX;
inline constexpr uint32_t kNone = UINT32_MAX;
// Whitespace between JSON tokens: at most one line break, and at most this many spaces or tabs
// before it and again after it (enough for a pretty-printed document ten levels deep).
inline constexpr uint32_t kMaxSpaces = 20;
// Additional-property keys must differ from the declared names; the automaton follows at most
// this many names (more: no additional properties are generated for that object).
inline constexpr size_t kMaxExcludedKeys = 64;

enum class NodeKind : uint8_t {
  kRoot,      // the bottom frame: one child, then done
  kLiteral,   // one of a set of exact byte strings
  kString,    // a JSON string
  kNumber,    // a JSON number or integer
  kObject,    // a JSON object with properties in declared order
  kArray,     // a JSON array
  kChoice,    // any one of its children (never a frame of its own)
  kSequence,  // its children one after another
};

// A small trie over byte strings (literals, object keys); node 0 is the root.
struct TrieEdge {
  uint8_t byte;
  uint32_t to;
};
struct LiteralTrieNode {
  std::vector<TrieEdge> next;
  bool terminal = false;
};
struct KeyTrieNode {
  std::vector<TrieEdge> next;
  uint32_t prop = kNone;              // the property whose full key (quotes included) ends here
  std::vector<uint32_t> props_below;  // every property whose key passes through this node
};

struct Property {
  std::string name;      // as decoded (UTF-8)
  std::string key_json;  // as written: a JSON string, quotes included
  uint32_t value = kNone;
  bool required = false;
};

struct Node {
  NodeKind kind = NodeKind::kChoice;
  // Fewest stack frames a complete value needs, its own frame included (kUnbounded: no finite
  // value exists). A value is only started where it fits under kMaxDepth.
  uint32_t min_depth = kUnbounded;
  std::bitset<256> first;  // the bytes a value can start with

  // kLiteral
  std::vector<LiteralTrieNode> literal;
  std::vector<std::string> texts;  // the strings of the trie
  bool raw_text = false;           // grammar text (a special token may stand for it), not JSON
  // kString
  uint32_t min_length = 0;  // in Unicode characters
  uint32_t max_length = kUnbounded;
  std::vector<std::string> excluded;  // whole values it may not take (additional-property keys)
  // kNumber
  NumberSpec number;
  // kObject: properties in the order they are generated; additional ones come after them
  std::vector<Property> props;
  std::vector<uint32_t> next_required;  // [i]: first required property >= i, or props.size()
  std::vector<KeyTrieNode> keys;        // over props[].key_json
  uint32_t additional = kNone;          // value node of additional properties
  uint32_t additional_key = kNone;      // string node for their keys (excludes declared names)
  // kArray
  std::vector<uint32_t> prefix_items;
  uint32_t items = kNone;  // after prefix_items; kNone: no more items
  uint32_t min_items = 0;
  uint32_t max_items = kUnbounded;
  // kChoice: alternatives; kSequence: parts; kRoot: the one child
  std::vector<uint32_t> children;
  std::vector<uint32_t> leaves;  // kChoice: the non-choice nodes it stands for, cycles removed

  uint32_t item_node(uint32_t index) const {
    return index < prefix_items.size() ? prefix_items[index] : items;
  }
};

struct GrammarGraph {
  std::vector<Node> nodes;
  uint32_t root = kNone;  // a kRoot node
};

}  // namespace bitdelta::constrain::detail
