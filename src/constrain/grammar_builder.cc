#include "constrain/grammar_builder.h"

#include <algorithm>

#include "util/error.h"

namespace bitdelta::constrain::detail {
namespace {

uint32_t saturating_add(uint32_t a, uint32_t b) {
  return a == kUnbounded || b == kUnbounded ? kUnbounded : a + b;
}

// Inserts `text` into a literal trie; returns the node where it ends.
uint32_t trie_insert(std::vector<LiteralTrieNode>& trie, std::string_view text) {
  uint32_t at = 0;
  for (char ch : text) {
    const uint8_t c = uint8_t(ch);
    uint32_t next = kNone;
    for (const TrieEdge& e : trie[at].next) {
      if (e.byte == c) next = e.to;
    }
    if (next == kNone) {
      next = uint32_t(trie.size());
      trie[at].next.push_back({c, next});
      trie.emplace_back();
    }
    at = next;
  }
  return at;
}

}  // namespace

GraphBuilder::GraphBuilder() : graph_(std::make_unique<GrammarGraph>()) {}

uint32_t GraphBuilder::add(Node n) {
  graph_->nodes.push_back(std::move(n));
  return uint32_t(graph_->nodes.size() - 1);
}

uint32_t GraphBuilder::literal(std::vector<std::string> texts, bool raw_text) {
  BD_CHECK(!texts.empty());
  std::sort(texts.begin(), texts.end());
  texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
  Node n;
  n.kind = NodeKind::kLiteral;
  n.raw_text = raw_text;
  n.literal.emplace_back();
  for (const std::string& t : texts) {
    BD_CHECK(!t.empty(), "empty literal");
    const uint32_t end = trie_insert(n.literal, t);
    n.literal[end].terminal = true;
  }
  n.texts = std::move(texts);
  return add(std::move(n));
}

uint32_t GraphBuilder::string(uint32_t min_length, uint32_t max_length,
                              std::vector<std::string> excluded) {
  Node n;
  n.kind = NodeKind::kString;
  n.min_length = min_length;
  n.max_length = max_length;
  BD_CHECK(excluded.size() <= kMaxExcludedKeys);
  n.excluded = std::move(excluded);
  return add(std::move(n));
}

uint32_t GraphBuilder::number(NumberSpec spec) {
  Node n;
  n.kind = NodeKind::kNumber;
  n.number = std::move(spec);
  return add(std::move(n));
}

uint32_t GraphBuilder::object(std::vector<Property> props, uint32_t additional) {
  Node n;
  n.kind = NodeKind::kObject;
  n.keys.emplace_back();
  for (uint32_t j = 0; j < props.size(); ++j) {
    // Like trie_insert, recording on each node which keys pass through it.
    uint32_t at = 0;
    n.keys[0].props_below.push_back(j);
    for (char ch : props[j].key_json) {
      const uint8_t c = uint8_t(ch);
      uint32_t next = kNone;
      for (const TrieEdge& e : n.keys[at].next) {
        if (e.byte == c) next = e.to;
      }
      if (next == kNone) {
        next = uint32_t(n.keys.size());
        n.keys[at].next.push_back({c, next});
        n.keys.emplace_back();
      }
      at = next;
      n.keys[at].props_below.push_back(j);
    }
    n.keys[at].prop = j;
  }
  n.next_required.assign(props.size() + 1, uint32_t(props.size()));
  for (size_t j = props.size(); j-- > 0;) {
    n.next_required[j] = props[j].required ? uint32_t(j) : n.next_required[j + 1];
  }
  n.additional = additional;
  if (additional != kNone && props.size() <= kMaxExcludedKeys) {
    std::vector<std::string> names;
    for (const Property& p : props) names.push_back(p.name);
    n.additional_key = string(0, kUnbounded, std::move(names));
  }
  n.props = std::move(props);
  return add(std::move(n));
}

uint32_t GraphBuilder::array(std::vector<uint32_t> prefix_items, uint32_t items, uint32_t min_items,
                             uint32_t max_items) {
  Node n;
  n.kind = NodeKind::kArray;
  n.prefix_items = std::move(prefix_items);
  n.items = items;
  n.min_items = min_items;
  n.max_items = max_items;
  return add(std::move(n));
}

uint32_t GraphBuilder::choice(std::vector<uint32_t> alternatives) {
  Node n;
  n.kind = NodeKind::kChoice;
  n.children = std::move(alternatives);
  return add(std::move(n));
}

void GraphBuilder::set_alternatives(uint32_t choice_node, std::vector<uint32_t> alternatives) {
  BD_CHECK(graph_->nodes[choice_node].kind == NodeKind::kChoice);
  graph_->nodes[choice_node].children = std::move(alternatives);
}

uint32_t GraphBuilder::sequence(std::vector<uint32_t> parts) {
  BD_CHECK(!parts.empty());
  if (parts.size() == 1) return parts[0];
  Node n;
  n.kind = NodeKind::kSequence;
  n.children = std::move(parts);
  return add(std::move(n));
}

uint32_t GraphBuilder::any_value() {
  if (any_value_ != kNone) return any_value_;
  any_value_ = reserve_choice();
  any_object_ = object({}, any_value_);
  const uint32_t any_array = array({}, any_value_, 0, kUnbounded);
  const uint32_t any_string = string(0, kUnbounded);
  NumberSpec spec;
  make_number_spec(false, {}, {}, spec);
  const uint32_t any_number = number(std::move(spec));
  const uint32_t words = literal({"true", "false", "null"}, false);
  set_alternatives(any_value_, {any_object_, any_array, any_string, any_number, words});
  return any_value_;
}

uint32_t GraphBuilder::any_object() {
  any_value();
  return any_object_;
}

void GraphBuilder::derive_leaves() {
  auto& nodes = graph_->nodes;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].kind != NodeKind::kChoice) continue;
    std::vector<uint32_t> leaves, todo{i};
    std::vector<bool> seen(nodes.size(), false);
    seen[i] = true;
    while (!todo.empty()) {
      const uint32_t at = todo.back();
      todo.pop_back();
      for (uint32_t c : nodes[at].children) {
        if (seen[c]) continue;
        seen[c] = true;
        if (nodes[c].kind == NodeKind::kChoice) {
          todo.push_back(c);
        } else {
          leaves.push_back(c);
        }
      }
    }
    std::sort(leaves.begin(), leaves.end());
    nodes[i].leaves = std::move(leaves);
  }
}

void GraphBuilder::derive_depths() {
  auto& nodes = graph_->nodes;
  for (bool changed = true; changed;) {
    changed = false;
    for (Node& n : nodes) {
      uint32_t d = kUnbounded;
      switch (n.kind) {
        case NodeKind::kLiteral:
        case NodeKind::kString:
        case NodeKind::kNumber:
          d = 1;
          break;
        case NodeKind::kObject:
          d = 1;
          for (const Property& p : n.props) {
            if (p.required) d = std::max(d, saturating_add(1, nodes[p.value].min_depth));
          }
          break;
        case NodeKind::kArray:
          d = 1;
          for (uint32_t k = 0; k < n.min_items; ++k) {
            const uint32_t item = n.item_node(k);
            d = std::max(d, item == kNone ? kUnbounded : saturating_add(1, nodes[item].min_depth));
          }
          break;
        case NodeKind::kSequence:
        case NodeKind::kRoot:
          d = 1;
          for (uint32_t c : n.children) d = std::max(d, saturating_add(1, nodes[c].min_depth));
          break;
        case NodeKind::kChoice:
          for (uint32_t c : n.leaves) d = std::min(d, nodes[c].min_depth);
          break;
      }
      if (d < n.min_depth) {
        n.min_depth = d;
        changed = true;
      }
    }
  }
}

void GraphBuilder::derive_first_bytes() {
  auto& nodes = graph_->nodes;
  for (bool changed = true; changed;) {
    changed = false;
    for (Node& n : nodes) {
      std::bitset<256> first;
      switch (n.kind) {
        case NodeKind::kLiteral:
          for (const TrieEdge& e : n.literal[0].next) first.set(e.byte);
          break;
        case NodeKind::kString:
          first.set('"');
          break;
        case NodeKind::kNumber:
          first.set('-');
          for (int c = '0'; c <= '9'; ++c) first.set(size_t(c));
          break;
        case NodeKind::kObject:
          first.set('{');
          break;
        case NodeKind::kArray:
          first.set('[');
          break;
        case NodeKind::kSequence:
        case NodeKind::kRoot:
          first = nodes[n.children[0]].first;
          break;
        case NodeKind::kChoice:
          for (uint32_t c : n.leaves) first |= nodes[c].first;
          break;
      }
      if (first != n.first) {
        n.first = first;
        changed = true;
      }
    }
  }
}

std::unique_ptr<GrammarGraph> GraphBuilder::finish(uint32_t child, std::string_view where) {
  Node root;
  root.kind = NodeKind::kRoot;
  root.children = {child};
  graph_->root = add(std::move(root));
  derive_leaves();
  derive_depths();
  derive_first_bytes();
  const uint32_t depth = graph_->nodes[graph_->root].min_depth;
  if (depth == kUnbounded) {
    fail(
        "{}: no finite document satisfies the schema (a required property, minItems or a "
        "sequence leads back through $ref without end, or no alternative is possible); make "
        "the recursion optional",
        where);
  }
  if (depth > kMaxDepth) {
    fail(
        "{}: the smallest document the schema allows is nested {} levels deep; at most {} are "
        "supported",
        where, depth - 1, kMaxDepth - 1);
  }
  return std::move(graph_);
}

}  // namespace bitdelta::constrain::detail
