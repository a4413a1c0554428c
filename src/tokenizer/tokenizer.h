// Text <-> token ids for the BPE tokenizers of the model families we serve (GPT-2, Qwen2/Qwen3,
// Llama-2/3, Mistral), reading Hugging Face tokenizer.json files and GPT-2 vocab.json/merges.txt.
// Output matches the Hugging Face `tokenizers` library id for id; components it does not
// implement are refused at load time rather than approximated.
//
// A Tokenizer is immutable after loading, cheap to copy (copies share one model) and safe to use
// from many threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitdelta {

namespace tok {
struct TokenizerImpl;
}

// A function call an assistant message made (OpenAI's tool_calls[i]).
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text, as the model wrote it or the client sent it
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", or "tool" (a tool's result)
  std::string content;
  std::string reasoning_content;  // assistant thinking (Qwen3); empty means none given
  std::vector<ToolCall> tool_calls;  // assistant
  std::string tool_call_id;          // tool: the call this answers
};

class Tokenizer {
 public:
  // Loads `dir/tokenizer.json` (+ optional `dir/tokenizer_config.json` for bos/eos/pad and the
  // chat template, or `dir/chat_template.jinja`), or, when there is no tokenizer.json, a GPT-2
  // style `vocab.json` + `merges.txt` pair. Throws Error for missing, corrupt or unsupported files.
  static Tokenizer from_folder(const std::filesystem::path& dir);
  static Tokenizer from_tokenizer_json(const std::filesystem::path& tokenizer_json);  // no config
  static Tokenizer from_gpt2_files(const std::filesystem::path& vocab_json,
                                   const std::filesystem::path& merges_txt);
  // Parses tokenizer.json text; `source` names it in error messages.
  static Tokenizer from_json_text(std::string_view json, const std::string& source);

  // Token ids of `text`. Never adds BOS/EOS. Added tokens (e.g. <|im_start|>) are matched in the
  // raw text before normalization; with parse_special false, special added tokens are treated as
  // plain text (HF encode_special_tokens). Invalid UTF-8 in `text` is first repaired (U+FFFD).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Text of `ids`; invalid UTF-8 produced by byte tokens becomes U+FFFD. Throws Error for an id
  // outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  int32_t vocab_size() const;  // max id + 1 over model vocab and added tokens
  std::optional<int32_t> token_id(std::string_view token) const;  // exact string, incl. added
  std::string token_text(int32_t id) const;  // raw vocab string ("Ġhello", "▁the"); "" for a gap
  bool is_special(int32_t id) const;         // a special added token
  // Decoded bytes of one token (its byte-level or byte-fallback bytes; may be partial UTF-8).
  std::string token_bytes(int32_t id) const;

  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> pad_id() const;
  bool add_bos() const;  // tokenizer_config add_bos_token (default false); callers add it
  std::string summary_kind() const;  // "byte-level BPE", "sentencepiece BPE (byte fallback)", ...
  size_t num_merges() const;
  size_t num_added_tokens() const;
  const std::optional<std::string>& chat_template_source() const;  // raw template text, if any

  // Overrides for callers that know better than the files (e.g. a generation_config eos).
  void set_bos_id(std::optional<int32_t> id);
  void set_eos_id(std::optional<int32_t> id);
  void set_pad_id(std::optional<int32_t> id);
  void set_chat_template_source(std::optional<std::string> source);

  const tok::TokenizerImpl& impl() const { return *impl_; }

 private:
  explicit Tokenizer(std::shared_ptr<tok::TokenizerImpl> impl);
  // Copy-on-write for the setters: the model stays shared, the small config is copied.
  tok::TokenizerImpl& mutable_impl();

  std::shared_ptr<tok::TokenizerImpl> impl_;
};

// Streaming decode for generation: feed ids one at a time and get the text that became final.
// Never emits half a UTF-8 character; the concatenation of every push() and the final flush()
// equals decode() of all ids.
//
// `context` (e.g. a completion's prompt) is decoded first and its text discarded, so the pushed
// ids decode as the continuation of that text: decode(context) + everything pushed ==
// decode(context ++ ids) whenever decode(context) ends on a whole character. Special tokens in
// the context (BOS) are skipped: they are not text, so a BOS-only context is no context. Without
// it, decoder rules for the start of a text apply to the first pushed id (sentencepiece drops the
// space of "▁time"), which is right for a chat reply and wrong for a completion.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false,
                              std::span<const int32_t> context = {});
  std::string push(int32_t id);  // text that became final with this token (may be empty)
  std::string flush();           // whatever is left (invalid trailing bytes become U+FFFD)

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool byte_level_;
  std::string pending_bytes_;  // decoded bytes not yet emitted (an incomplete character)
  bool stripped_ = false;      // the decoder's leading strip has been applied
  bool emitted_any_ = false;
};

}  // namespace bitdelta
