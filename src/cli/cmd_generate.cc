// bitdelta generate / bitdelta logits: run a model folder on a prompt.
#include <fmt/format.h>

#include <charconv>
#include <cstdio>

#include "cli/commands.h"
#include "delta/adapter.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/transformer.h"
#include "ops/sign_matmul.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace bitdelta::cli {

std::vector<int32_t> parse_id_list(const std::string& text, const char* option) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find_first_of(", ", i);
    if (j == std::string::npos) j = text.size();
    if (j > i) {
      int32_t id = 0;
      auto [end, ec] = std::from_chars(text.data() + i, text.data() + j, id);
      if (ec != std::errc() || end != text.data() + j || id < 0) {
        fail("{}: '{}' is not a token id (expected non-negative integers like 1,2,3)", option,
             text.substr(i, j - i));
      }
      ids.push_back(id);
    }
    i = j + 1;
  }
  if (ids.empty()) fail("{}: no token ids given", option);
  return ids;
}

// Opens, validates and binds an adapter to `model` (empty path: none).
std::shared_ptr<Adapter> load_adapter_for(const Transformer& model, const std::string& path) {
  if (path.empty()) return nullptr;
  return open_adapter_for(path, model, default_thread_pool());
}

CLI::App* register_generate(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "generate",
      "Generate text from a prompt, streaming it to the terminal; prints prefill and decode "
      "speed on stderr");
  struct Options {
    std::string model, prompt, prompt_ids, system, adapter;
    bool chat = false, no_think = false, print_ids = false, no_bos = false, ignore_eos = false;
    bool exact_deltas = false;
    QuantFlags quant;
    int64_t max_tokens = 256;
    int threads = 0;
    SamplingParams sampling;
    std::vector<std::string> stop;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Hugging Face model folder")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* prompt = cmd->add_option(
      "--prompt", o->prompt,
      "Prompt text; generation continues it. Without --prompt and --prompt-ids (or with an empty "
      "prompt) the model starts from BOS alone, for tokenizers that add one");
  auto* ids = cmd->add_option("--prompt-ids", o->prompt_ids,
                              "Prompt as token ids, e.g. 1,2,3 (used as given: no BOS added)");
  prompt->excludes(ids);
  cmd->add_flag("--chat", o->chat,
                "Wrap the prompt as a user message in the model's chat template");
  cmd->add_option("--system", o->system, "With --chat: a system message");
  cmd->add_flag("--no-think", o->no_think,
                "With --chat on Qwen3: turn thinking off (enable_thinking=false)");
  cmd->add_option("--max-tokens,-n", o->max_tokens, "Most tokens to generate")
      ->capture_default_str()
      ->check(non_negative());
  cmd->add_option("--temperature,-t", o->sampling.temperature, "0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass (1 = off)")
      ->capture_default_str();
  cmd->add_option("--min-p", o->sampling.min_p, "Drop tokens below min_p × the best (0 = off)")
      ->capture_default_str();
  cmd->add_option("--repetition-penalty", o->sampling.repetition_penalty, "1 = off")
      ->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "Random seed (same seed, same output)")
      ->capture_default_str();
  cmd->add_option("--stop", o->stop, "Stop before this string (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS to a text prompt");
  cmd->add_flag("--print-ids", o->print_ids,
                "Print the generated token ids on one line instead of text");
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)");
  cmd->add_option("--adapter", o->adapter,
                  "A user's BitDelta adapter (.bdelta) made against this model, applied on the fly")
      ->check(CLI::ExistingFile);
  add_precision_flags(cmd, o->exact_deltas);
  add_quant_flags(cmd, o->quant);
  runner = [=] {
    validate(o->sampling);
    if (o->threads > 0) set_default_threads(o->threads);
    set_exact_sign_pass(o->exact_deltas);
    auto model = Transformer::load(o->model, quant_options(o->quant));
    std::shared_ptr<Adapter> adapter = load_adapter_for(*model, o->adapter);
    Tokenizer tokenizer = Tokenizer::from_folder(o->model);
    std::vector<int32_t> prompt_ids;
    bool plain_chat = false;
    if (!o->prompt_ids.empty()) {
      prompt_ids = parse_id_list(o->prompt_ids, "--prompt-ids");
    } else {
      std::string text = o->prompt;
      bool add_bos = tokenizer.add_bos() && !o->no_bos;
      if (o->chat) {
        // An adapter trained in its own chat format (e.g. plain) is talked to in that format.
        const auto& meta = adapter ? adapter->metadata() : std::map<std::string, std::string>{};
        const auto format = meta.find("chat_format");
        const ChatTemplate chat =
            format != meta.end()
                ? ChatTemplate::select(tokenizer, model->config().model_type, format->second)
                : ChatTemplate::detect(tokenizer, model->config().model_type);
        plain_chat = chat.format() == ChatFormat::kPlain;
        std::vector<ChatMessage> messages;
        if (!o->system.empty()) messages.push_back({"system", o->system, ""});
        messages.push_back({"user", o->prompt, ""});
        ChatOptions options;
        options.enable_thinking = !o->no_think;
        text = chat.render(messages, options);
        add_bos = false;  // templates write BOS themselves where the model wants it
      }
      if (add_bos && tokenizer.bos_id()) prompt_ids.push_back(*tokenizer.bos_id());
      auto encoded = tokenizer.encode(text);
      prompt_ids.insert(prompt_ids.end(), encoded.begin(), encoded.end());
      if (prompt_ids.empty()) {
        fail("the prompt is empty and the tokenizer adds no BOS; give --prompt text or "
             "--prompt-ids");
      }
    }
    const int64_t context = model->config().max_position_embeddings;
    const int64_t prompt_tokens = static_cast<int64_t>(prompt_ids.size());
    if (prompt_tokens >= context) {
      fail(
          "the prompt has {} tokens; this model's context holds {} positions, which leaves no "
          "room to generate: shorten the prompt",
          prompt_tokens, context);
    }
    int64_t max_tokens = o->max_tokens;
    if (prompt_tokens + max_tokens > context) {
      max_tokens = context - prompt_tokens;
      fmt::print(stderr,
                 "note: --max-tokens {} does not fit: the context holds {} positions and the "
                 "prompt takes {}, so at most {} tokens will be generated\n",
                 o->max_tokens, context, prompt_tokens, max_tokens);
    }
    GenerateOptions options;
    options.max_tokens = max_tokens;
    options.sampling = o->sampling;
    options.stop_strings = o->stop;
    options.continues_prompt = !o->chat;
    options.strip_leading_space = plain_chat;
    if (adapter) options.adapter = &adapter->weights();
    if (!o->ignore_eos) {
      if (auto eos = tokenizer.eos_id()) options.stop_ids.push_back(*eos);
      if (model->config().eos_token_id >= 0 &&
          model->config().eos_token_id != tokenizer.eos_id().value_or(-1)) {
        options.stop_ids.push_back(static_cast<int32_t>(model->config().eos_token_id));
      }
    }
    auto print = [&](std::string_view text) {
      if (!o->print_ids) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      }
    };
    if (!o->print_ids && !o->chat && o->prompt_ids.empty()) print(o->prompt);
    GenerateResult r = generate(*model, &tokenizer, prompt_ids, options, print, default_thread_pool());
    if (o->print_ids) {
      fmt::print("{}\n", fmt::join(r.tokens, " "));
    } else {
      fmt::print("\n");
    }
    std::fflush(stdout);  // the text ends before the speed line on a shared terminal
    const double prefill_tps = r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0;
    const int64_t decoded = std::max<int64_t>(0, static_cast<int64_t>(r.tokens.size()) - 1);
    const double decode_tps = r.decode_seconds > 0 ? decoded / r.decode_seconds : 0;
    fmt::print(stderr,
               "prefill: {} tokens in {:.3f} s ({:.1f} tokens/s); decode: {} tokens in {:.3f} s "
               "({:.1f} tokens/s); finish: {}\n",
               r.prompt_tokens, r.prefill_seconds, prefill_tps, decoded, r.decode_seconds,
               decode_tps, r.finish_reason);
    return 0;
  };
  return cmd;
}

CLI::App* register_logits(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "logits",
      "Write the F32 logits [T, vocab] of a prompt given as token ids to a safetensors file "
      "(tensor 'logits'), to debug a model or compare it with another implementation");
  struct Options {
    std::string model, ids, out, adapter;
    bool exact_deltas = false;
    QuantFlags quant;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Hugging Face model folder")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--ids", o->ids, "Prompt token ids, e.g. 1,2,3 (used as given)")->required();
  cmd->add_option("--out", o->out, "Output .safetensors file (written atomically)")->required();
  cmd->add_option("--adapter", o->adapter, "A user's BitDelta adapter (.bdelta) to apply")
      ->check(CLI::ExistingFile);
  add_precision_flags(cmd, o->exact_deltas);
  add_quant_flags(cmd, o->quant);
  runner = [=] {
    set_exact_sign_pass(o->exact_deltas);
    std::vector<int32_t> ids = parse_id_list(o->ids, "--ids");
    auto model = Transformer::load(o->model, quant_options(o->quant));
    std::shared_ptr<Adapter> adapter = load_adapter_for(*model, o->adapter);
    KVCache cache = model->new_cache();
    SequenceInput input{&cache, ids, true, adapter ? &adapter->weights() : nullptr};
    std::vector<float> logits;
    model->forward({&input, 1}, &logits, default_thread_pool());
    SafetensorsWriter writer;
    writer.set_metadata("ids", fmt::format("{}", fmt::join(ids, ",")));
    writer.add_f32("logits", {static_cast<int64_t>(ids.size()), model->config().vocab_size},
                   logits);
    writer.write(o->out);
    fmt::print("wrote logits [{}, {}] to {}\n", ids.size(), model->config().vocab_size, o->out);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
