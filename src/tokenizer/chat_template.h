// Chat prompt rendering for the model families we serve, byte-exact with their published Jinja
// templates for plain system/user/assistant conversations. We render in C++ instead of running a
// Jinja interpreter: a handful of known templates cover our models, and a template we do not
// recognize is refused rather than guessed at.
//
// Supported templates (fixtures from the real Jinja texts: tools/gen_chat_template_fixtures.py):
//   kQwen3   Qwen3's template (chat_template.jinja of Qwen/Qwen3-*): ChatML with <think> blocks.
//            enable_thinking=false closes an empty think block in the generation prompt;
//            assistant turns after the last user query show their reasoning_content, earlier ones
//            drop it; reasoning inside "<think>...</think>" in content is split out the same way.
//   kChatML  "<|im_start|>role\ncontent<|im_end|>\n" per message (Qwen2/Qwen2.5 Instruct without
//            tools; a default system prompt found in the template is kept, e.g. Qwen2's
//            "You are a helpful assistant.").
//   kLlama3  Meta Llama-3 (3.0) Instruct: BOS, then "<|start_header_id|>role<|end_header_id|>\n\n"
//            + trimmed content + "<|eot_id|>".
//   kLlama31 Meta Llama-3.1 Instruct (the template of meta-llama/Llama-3.1-8B-Instruct): a system
//            turn with the knowledge cut-off and the template's fixed date (26 Jul 2024), tools
//            in the first user turn (tools_in_user_message), one tool call per assistant turn as
//            {"name", "parameters"}, tool results as "ipython" turns. Templates that take
//            today's date (strftime_now: Llama 3.2, 3.3) are refused: their rendering changes
//            daily.
//   kLlama2  Llama-2-chat: "<s>[INST] <<SYS>>\n...\n<</SYS>>\n\n...[/INST] answer </s>", roles must
//            alternate user/assistant after an optional system message.
//   kMistral Mistral-7B-Instruct v0.2 / Mixtral: "<s>[INST] user [/INST]answer</s>", no system
//            role; v0.1's variant (a space after each "</s>") is recognized too.
//   kPlain   Our documented format for bases without a chat template (docs/personalization.md):
//   BOS, then
//            one line per message, "System: …", "User: …", "Assistant: …" + EOS; the generation
//            prompt is "Assistant:". Never detected: an operator picks it (--chat-format plain)
//            and the adapters trained with it record it, so serving renders them the same way.
// The rendering includes the BOS text where the template does, so callers encode it with
// parse_special and do not add another BOS.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

enum class ChatFormat { kQwen3, kChatML, kLlama3, kLlama31, kLlama2, kMistral, kPlain };

// How a template's model writes a tool call, for parsing it and for constraining it.
struct ToolCallSyntax {
  std::string open, close;    // around each call: "<tool_call>" / "</tool_call>" (Qwen3)
  std::string arguments_key;  // "arguments" (Qwen3) or "parameters" (Llama 3.1)
  // Llama 3.1: a call is the whole reply, one JSON object {"name", "parameters"} (optionally
  // after <|python_tag|>), with no markers around it.
  bool whole_reply = false;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = true;  // Qwen3 only
  // Tool definitions ({"type": "function", "function": {...}}) as JSON text, their keys in the
  // order given (each template writes them with its own `tojson`: python_json_dumps). Only
  // templates that define tools take them (Qwen3, Llama 3.1); the others refuse them.
  std::vector<std::string> tools;
};

class ChatTemplate {
 public:
  // Picks the format from the tokenizer's chat template text (fingerprinting known templates) or,
  // when it has none, from the model family: "qwen3" -> Qwen3, "qwen2" -> ChatML, "llama" ->
  // Llama-2 unless the vocab has <|start_header_id|> (then Llama-3), "mistral" -> Mistral.
  // Throws Error naming the supported templates when neither identifies one.
  static ChatTemplate detect(const Tokenizer& tokenizer, std::string_view model_type);
  static ChatTemplate of(ChatFormat format);
  // An operator's choice by name: "auto" is detect(); "plain", "qwen3", "chatml", "llama3",
  // "llama2" and "mistral" pick that format (BOS/EOS texts from the tokenizer). With
  // `require_own_template`, "auto" refuses a tokenizer that carries no chat template of its own
  // (a pretrained base, e.g. stories260K), asking for --chat-format instead of guessing one from
  // the model family. Throws Error naming the choices.
  static ChatTemplate select(const Tokenizer& tokenizer, std::string_view model_type,
                             std::string_view choice, bool require_own_template = false);
  // The name select() takes for this template ("plain", "qwen3", ...).
  std::string_view choice_name() const;
  // Fingerprints template text alone; throws Error when it is not a supported template.
  static ChatTemplate from_source(std::string_view template_source);

  ChatFormat format() const { return format_; }
  std::string_view name() const;
  // The system prompt used when the conversation has none (ChatML templates that define one).
  const std::string& default_system() const { return default_system_; }

  // Whether the template renders tools, tool calls and tool results (role "tool").
  bool supports_tools() const {
    return format_ == ChatFormat::kQwen3 || format_ == ChatFormat::kLlama31;
  }
  // How its model writes tool calls (only where supports_tools()).
  ToolCallSyntax tool_call_syntax() const;

  // Throws Error for roles other than system/user/assistant (and tool where the template has
  // tools), tools or tool calls on a template without them, an empty conversation, or an order
  // of roles the template itself rejects (Llama-2 and Mistral require alternation).
  std::string render(const std::vector<ChatMessage>& messages,
                     const ChatOptions& options = {}) const;

 private:
  explicit ChatTemplate(ChatFormat format);
  void take_special_texts(const Tokenizer& tokenizer);

  ChatFormat format_;
  std::string bos_ = "<s>";
  std::string eos_ = "</s>";
  std::string default_system_;
  std::string answer_suffix_;  // Mistral v0.1 writes a space after each answer's EOS
};

}  // namespace bitdelta
