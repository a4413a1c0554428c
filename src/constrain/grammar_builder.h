// Builds a GrammarGraph node by node, then derives what the automaton needs (choice leaves,
// first bytes, depths) and checks that the grammar admits some finite text. Internal to
// src/constrain: the schema compiler and Grammar's factories use it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "constrain/grammar_nodes.h"

namespace bitdelta::constrain::detail {

class GraphBuilder {
 public:
  GraphBuilder();

  const Node& node(uint32_t i) const { return graph_->nodes[i]; }

  // One of `texts` exactly (non-empty, at least one). raw_text: grammar text rather than a JSON
  // value, which a special token with the same text may stand for.
  uint32_t literal(std::vector<std::string> texts, bool raw_text);
  uint32_t string(uint32_t min_length, uint32_t max_length, std::vector<std::string> excluded = {});
  uint32_t number(NumberSpec spec);
  // Properties in the order they are generated; `additional`: value node for other keys, or kNone.
  uint32_t object(std::vector<Property> props, uint32_t additional);
  uint32_t array(std::vector<uint32_t> prefix_items, uint32_t items, uint32_t min_items,
                 uint32_t max_items);
  uint32_t choice(std::vector<uint32_t> alternatives);
  uint32_t sequence(std::vector<uint32_t> parts);
  // A choice to fill in later (a $ref target being compiled may refer back to it).
  uint32_t reserve_choice() { return choice({}); }
  void set_alternatives(uint32_t choice_node, std::vector<uint32_t> alternatives);
  // Shared nodes for any JSON value / any JSON object (built once per graph).
  uint32_t any_value();
  uint32_t any_object();

  // Adds the root over `child` and finishes the graph. Throws Error, its message starting with
  // `where`, when no finite text fits in kMaxDepth frames.
  std::unique_ptr<GrammarGraph> finish(uint32_t child, std::string_view where);

 private:
  uint32_t add(Node n);
  void derive_leaves();
  void derive_depths();
  void derive_first_bytes();

  std::unique_ptr<GrammarGraph> graph_;
  uint32_t any_value_ = kNone;
  uint32_t any_object_ = kNone;
};

}  // namespace bitdelta::constrain::detail
