// bitdelta info: what a model folder holds, checked against what its config.json promises.
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "io/hf_layout.h"
#include "io/model_config.h"
#include "io/weight_files.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

struct DTypeTotals {
  int64_t tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
};

ordered_json describe_model(const fs::path& dir, std::vector<std::string>* problems) {
  ordered_json out;
  out["path"] = fs::absolute(dir).string();
  std::optional<ModelConfig> config;
  if (fs::exists(dir / "config.json")) {
    config = load_model_config(dir / "config.json");
    const ModelConfig& c = *config;
    out["architecture"] = {
        {"model_type", c.model_type},
        {"layers", c.num_hidden_layers},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"attention_heads", c.num_attention_heads},
        {"kv_heads", c.num_key_value_heads},
        {"head_dim", c.head_dim},
        {"vocab_size", c.vocab_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"rope_theta", c.rope_theta},
        {"rope_scaling", c.rope_scaling.type == RopeScaling::Type::kNone     ? "none"
                         : c.rope_scaling.type == RopeScaling::Type::kLinear ? "linear"
                                                                             : "llama3"},
        {"rms_norm_eps", c.rms_norm_eps},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"attention_bias", c.attention_bias},
        {"qk_norm", c.qk_norm},
    };
  } else {
    problems->push_back("no config.json");
  }

  const bool has_weights =
      fs::exists(dir / "model.safetensors") || fs::exists(dir / "model.safetensors.index.json");
  if (has_weights) {
    WeightFiles weights = WeightFiles::open(dir);
    std::map<std::string, DTypeTotals> by_dtype;
    int64_t parameters = 0;
    for (const auto& name : weights.names()) {
      const TensorInfo* t = weights.find(name);
      auto& totals = by_dtype[std::string(dtype_name(t->dtype))];
      totals.tensors += 1;
      totals.elements += t->numel();
      totals.bytes += t->nbytes();
      parameters += t->numel();
    }
    ordered_json dtypes = ordered_json::object();
    for (const auto& [name, t] : by_dtype) {
      dtypes[name] = {{"tensors", t.tensors}, {"parameters", t.elements}, {"bytes", t.bytes}};
    }
    out["weights"] = {{"files", weights.shards().size()},
                      {"tensors", weights.names().size()},
                      {"parameters", parameters},
                      {"bytes", weights.tensor_bytes()},
                      {"dtypes", dtypes}};
    if (config) {
      std::set<std::string> expected_names;
      for (const auto& e : expected_tensors(*config)) {
        expected_names.insert(e.name);
        const TensorInfo* t = weights.find(e.name);
        if (t == nullptr) {
          problems->push_back(fmt::format("missing tensor {}", e.name));
        } else if (t->shape != e.shape) {
          problems->push_back(fmt::format("tensor {} has shape [{}], config.json implies [{}]",
                                          e.name, fmt::join(t->shape, ", "),
                                          fmt::join(e.shape, ", ")));
        } else if (!is_float_weight(t->dtype)) {
          problems->push_back(fmt::format("tensor {} has dtype {}; weights must be F32, F16 or BF16",
                                          e.name, dtype_name(t->dtype)));
        }
      }
      for (const auto& name : weights.names()) {
        if (!expected_names.count(name)) {
          problems->push_back(fmt::format("unexpected tensor {}", name));
        }
      }
    }
  } else {
    problems->push_back("no model weights (model.safetensors or model.safetensors.index.json)");
  }

  if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "vocab.json")) {
    Tokenizer tokenizer = Tokenizer::from_folder(dir);
    auto id_or_null = [](std::optional<int32_t> id) {
      return id ? ordered_json(*id) : ordered_json(nullptr);
    };
    ordered_json tok = {{"kind", tokenizer.summary_kind()},
                        {"vocab_size", tokenizer.vocab_size()},
                        {"merges", tokenizer.num_merges()},
                        {"added_tokens", tokenizer.num_added_tokens()},
                        {"bos_id", id_or_null(tokenizer.bos_id())},
                        {"eos_id", id_or_null(tokenizer.eos_id())},
                        {"add_bos", tokenizer.add_bos()}};
    try {
      tok["chat_template"] =
          ChatTemplate::detect(tokenizer, config ? config->model_type : "").name();
    } catch (const Error& e) {
      tok["chat_template"] = fmt::format("unsupported: {}", e.what());
    }
    if (config && tokenizer.vocab_size() > config->vocab_size) {
      problems->push_back(fmt::format("the tokenizer has {} tokens but the model only {}",
                                      tokenizer.vocab_size(), config->vocab_size));
    }
    out["tokenizer"] = tok;
  } else {
    problems->push_back("no tokenizer.json");
  }
  out["problems"] = *problems;
  return out;
}

void print_text(const ordered_json& j) {
  fmt::print("model: {}\n", j["path"].get<std::string>());
  if (j.contains("architecture")) {
    const auto& a = j["architecture"];
    fmt::print(
        "architecture: {} — {} layers, hidden {}, intermediate {}, {} heads / {} kv heads, "
        "head_dim {}, vocab {}, context {}\n",
        a["model_type"].get<std::string>(), a["layers"].get<int64_t>(),
        a["hidden_size"].get<int64_t>(), a["intermediate_size"].get<int64_t>(),
        a["attention_heads"].get<int64_t>(), a["kv_heads"].get<int64_t>(),
        a["head_dim"].get<int64_t>(), a["vocab_size"].get<int64_t>(),
        a["max_position_embeddings"].get<int64_t>());
    fmt::print("  rope_theta {}, rope_scaling {}, rms_norm_eps {}, tied embeddings {}, qkv bias "
               "{}, q/k norm {}\n",
               a["rope_theta"].get<double>(), a["rope_scaling"].get<std::string>(),
               a["rms_norm_eps"].get<double>(), a["tie_word_embeddings"].get<bool>(),
               a["attention_bias"].get<bool>(), a["qk_norm"].get<bool>());
  }
  if (j.contains("weights")) {
    const auto& w = j["weights"];
    fmt::print("weights: {} parameters in {} tensors, {} in {} file(s)\n",
               w["parameters"].get<int64_t>(), w["tensors"].get<size_t>(),
               human_bytes(w["bytes"].get<uint64_t>()), w["files"].get<size_t>());
    for (const auto& [dtype, t] : w["dtypes"].items()) {
      fmt::print("  {:<5} {} tensors, {} parameters, {}\n", dtype, t["tensors"].get<int64_t>(),
                 t["parameters"].get<int64_t>(), human_bytes(t["bytes"].get<uint64_t>()));
    }
  }
  if (j.contains("tokenizer")) {
    const auto& t = j["tokenizer"];
    auto id = [](const ordered_json& v) { return v.is_null() ? std::string("none") : v.dump(); };
    fmt::print("tokenizer: {}, {} tokens, {} merges, {} added tokens; bos {}, eos {}; chat "
               "template: {}\n",
               t["kind"].get<std::string>(), t["vocab_size"].get<int32_t>(),
               t["merges"].get<size_t>(), t["added_tokens"].get<size_t>(), id(t["bos_id"]),
               id(t["eos_id"]), t["chat_template"].get<std::string>());
  }
  for (const auto& p : j["problems"]) fmt::print("problem: {}\n", p.get<std::string>());
}

}  // namespace

CLI::App* register_info(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "info",
      "Describe a Hugging Face model folder: architecture, parameter count, dtypes, bytes, "
      "tokenizer; and check the weights against config.json (exit 1 if they disagree)");
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("DIR", *dir, "Model folder (config.json, model.safetensors[.index.json], "
                               "tokenizer.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", *json, "Print one JSON object instead of text");
  runner = [=] {
    std::vector<std::string> problems;
    ordered_json j = describe_model(*dir, &problems);
    if (*json) {
      fmt::print("{}\n", j.dump(2));
    } else {
      print_text(j);
    }
    return problems.empty() ? 0 : 1;
  };
  return cmd;
}

}  // namespace bitdelta::cli
