#include <fmt/format.h>

#include "cli/commands.h"
#include "io/gguf_export.h"
#include "io/llama2c_import.h"

namespace bitdelta::cli {

CLI::App* register_import_llama2c(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "import-llama2c",
      "Convert a llama2.c checkpoint and its tokenizer into a Hugging Face Llama folder "
      "(config.json, model.safetensors, tokenizer.json, tokenizer_config.json, "
      "generation_config.json) that computes exactly the same model");
  auto model = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "llama2.c legacy checkpoint (.bin)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", *tokenizer, "llama2.c tokenizer (tokenizer.bin / tok512.bin)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", *out, "Output folder (created if missing; files in it are replaced)")
      ->required();
  runner = [=] {
    auto result = import_llama2c(*model, *tokenizer, *out);
    fmt::print("imported {} parameters (dim {}, {} layers, {} heads, {} kv heads, vocab {}, {} "
               "merges) into {}\n",
               result.parameters, result.config.hidden_size, result.config.num_hidden_layers,
               result.config.num_attention_heads, result.config.num_key_value_heads,
               result.vocab_size, result.merges, *out);
    return 0;
  };
  return cmd;
}

CLI::App* register_export_gguf(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "export-gguf",
      "Write a Hugging Face model folder (llama, mistral, qwen2, qwen3) as a GGUF file that "
      "llama.cpp loads: the same weights (matrices in their dtype, vectors as F32), llama.cpp's "
      "tensor names and metadata, and the tokenizer's vocabulary");
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out", *out, "The .gguf file (written atomically)")->required();
  runner = [=] {
    const GgufExportResult r = export_gguf(*model, *out);
    fmt::print("wrote {} ({}, {} tensors, {} metadata entries, {} tokens as \"{}\"): {} bytes\n",
               *out, r.architecture, r.tensors, r.metadata, r.vocab, r.tokenizer_model, r.bytes);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
