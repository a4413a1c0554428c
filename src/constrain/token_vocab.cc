#include "constrain/token_vocab.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "util/error.h"

namespace bitdelta::constrain {

TokenVocab::TokenVocab(std::vector<std::string> token_bytes, std::vector<bool> special)
    : bytes_(std::move(token_bytes)) {
  if (special.size() != bytes_.size()) {
    fail("token vocabulary: {} token byte strings but {} special flags", bytes_.size(),
         special.size());
  }
  special_.assign(special.begin(), special.end());
  for (int32_t id = 0; id < size(); ++id) {
    if (special_[size_t(id)] && !bytes_[size_t(id)].empty()) special_ids_.push_back(id);
  }
  build_trie();
}

TokenVocab::~TokenVocab() = default;

std::shared_ptr<const TokenVocab> TokenVocab::from_tokenizer(const Tokenizer& tokenizer) {
  const int32_t n = tokenizer.vocab_size();
  std::vector<std::string> bytes(static_cast<size_t>(n));
  std::vector<bool> special(size_t(n), false);
  for (int32_t id = 0; id < n; ++id) {
    bytes[size_t(id)] = tokenizer.token_bytes(id);
    special[size_t(id)] = tokenizer.is_special(id);
  }
  // Added tokens that are not "special" (Qwen3's <tool_call>, <think>) are still markup, not text.
  for (const tok::AddedToken& t : tokenizer.impl().added_tokens) {
    if (t.id >= 0 && t.id < n) special[size_t(t.id)] = true;
  }
  return std::make_shared<const TokenVocab>(std::move(bytes), std::move(special));
}

void TokenVocab::build_trie() {
  std::vector<int32_t> ids;
  std::vector<bool> single(256, false);
  for (int32_t id = 0; id < size(); ++id) {
    const std::string& b = bytes_[size_t(id)];
    if (special_[size_t(id)] || b.empty()) continue;
    if (b.size() > 0xFFFF) fail("token vocabulary: token {} is {} bytes long", id, b.size());
    ids.push_back(id);
    if (b.size() == 1) single[uint8_t(b[0])] = true;
  }
  covers_all_bytes_ = std::all_of(single.begin(), single.end(), [](bool x) { return x; });
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return bytes_[size_t(a)] < bytes_[size_t(b)]; });

  detail::TokenTrie& t = trie_;
  std::vector<uint32_t> open;  // nodes on the current path, by depth - 1
  const std::string* previous = nullptr;
  for (int32_t id : ids) {
    const std::string& s = bytes_[size_t(id)];
    size_t common = 0;
    if (previous != nullptr) {
      const size_t limit = std::min(s.size(), previous->size());
      while (common < limit && s[common] == (*previous)[common]) ++common;
    }
    // Close the nodes of the previous path below the common prefix, then open the new ones.
    while (open.size() > common) {
      t.subtree_end[open.back()] = uint32_t(t.byte.size());
      open.pop_back();
    }
    for (size_t d = common; d < s.size(); ++d) {
      open.push_back(uint32_t(t.byte.size()));
      t.byte.push_back(uint8_t(s[d]));
      t.depth.push_back(uint16_t(d + 1));
      t.subtree_end.push_back(0);
      t.token_begin.push_back(uint32_t(t.tokens.size()));
    }
    t.tokens.push_back(id);
    t.max_depth = std::max<uint16_t>(t.max_depth, uint16_t(s.size()));
    previous = &s;
  }
  while (!open.empty()) {
    t.subtree_end[open.back()] = uint32_t(t.byte.size());
    open.pop_back();
  }
  t.token_begin.push_back(uint32_t(t.tokens.size()));
}

const detail::StringTable& TokenVocab::string_table(uint8_t sub) const {
  BD_CHECK(sub < detail::kNumStringSubs);
  std::call_once(table_once_[sub], [&] {
    auto table = std::make_unique<detail::StringTable>();
    table->inside_all.resize(size());
    std::vector<std::pair<uint32_t, int32_t>> inside;  // characters, id
    std::map<std::string, std::vector<std::pair<int32_t, uint32_t>>> closing;
    for (int32_t id : trie_.tokens) {
      const std::string& b = bytes_[size_t(id)];
      uint8_t state = sub;
      uint32_t chars = 0;
      bool backslash = false, rejected = false;
      size_t close_at = std::string::npos;
      for (size_t i = 0; i < b.size(); ++i) {
        const detail::StringStep st = detail::string_step(state, uint8_t(b[i]));
        if (st.kind == detail::StringStep::kReject) {
          rejected = true;
          break;
        }
        if (st.kind == detail::StringStep::kClose) {
          close_at = i;
          break;
        }
        chars += st.counts;
        backslash |= b[i] == '\\';
        state = st.next;
      }
      if (rejected) continue;
      if (close_at != std::string::npos) {
        closing[b.substr(close_at + 1)].push_back({id, chars});
        table->max_count = std::max(table->max_count, chars);
        continue;
      }
      table->inside_all.set(id);
      inside.push_back({chars, id});
      if (backslash) table->inside_backslash.push_back(id);
    }
    std::stable_sort(inside.begin(), inside.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    if (!inside.empty()) table->max_count = std::max(table->max_count, inside.back().first);
    table->count_offsets.assign(table->max_count + 2, uint32_t(inside.size()));
    for (size_t i = inside.size(); i-- > 0;) table->count_offsets[inside[i].first] = uint32_t(i);
    for (uint32_t k = table->max_count + 1; k-- > 0;) {
      table->count_offsets[k] = std::min(table->count_offsets[k], table->count_offsets[k + 1]);
    }
    for (const auto& [chars, id] : inside) table->inside_by_count.push_back(id);
    for (auto& [suffix, tokens] : closing) {
      table->closing.push_back({suffix, std::move(tokens)});
    }
    tables_[sub] = std::move(table);
  });
  return *tables_[sub];
}

}  // namespace bitdelta::constrain

namespace bitdelta::constrain {

void TokenVocab::prepare_string_tables() const {
  for (uint8_t sub = 0; sub < detail::kNumStringSubs; ++sub) string_table(sub);
}

}  // namespace bitdelta::constrain
