// bitdelta receipt verify / show: LP-105 compute receipts (docs/receipts.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "safety/receipt.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta::cli {

namespace {

std::string optional_number(const std::optional<double>& v) {
  return v ? fmt::format("{}", *v) : std::string("not measured");
}

void print_receipt(const std::string& file, const ComputeReceipt& r) {
  const ReceiptInputs& j = r.job;
  fmt::print("{}: LP-105 compute receipt, version 1, made {}\n", file, j.timestamp);
  fmt::print("job\n");
  fmt::print("  adapter            {} ({} bytes, SHA-256 {})\n", j.adapter_id, j.adapter_bytes,
             j.adapter_hash);
  fmt::print("  for user           {}\n", j.requester_lux_id);
  fmt::print("  domain             {}\n", j.domain);
  fmt::print("  base model         {}\n", j.model_hash);
  fmt::print("  records            SHA-256 {}\n", j.input_hash);
  fmt::print("  job id             {}\n",
             j.job_id.empty() ? "(none: made from the CLI)" : j.job_id);
  fmt::print("  chain / function   122 / bitdelta_adaptation\n");
  fmt::print("metrics\n");
  fmt::print("  compression ratio  {}\n", j.compression_ratio);
  fmt::print("  quality score      {}\n", optional_number(j.quality_score));
  fmt::print("  safety score       {}\n", optional_number(j.safety_score));
  if (j.dp) {
    fmt::print("  privacy            (ε = {}, δ = {})-DP (DP-SGD)\n", j.dp->epsilon, j.dp->delta);
  } else {
    fmt::print("  privacy            no differential privacy\n");
  }
  fmt::print("  train tokens       {}\n", j.train_tokens);
  fmt::print("  seconds            {}\n", j.seconds);
  fmt::print("proof\n");
  fmt::print("  type               {} ({}), no TEE quote\n", r.proof_type, r.algorithm);
  fmt::print("  key                {} (public key {})\n", r.key_id, r.public_key);
  fmt::print("  signature          {}\n", r.signature);
}

}  // namespace

CLI::App* register_receipt(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "receipt",
      "LP-105 compute receipts (docs/receipts.md): signed canonical JSON stating which adapter "
      "was made for which user, on which base, from which records, with which metrics. "
      "Subcommands: verify, show");
  cmd->require_subcommand(1);
  struct Options {
    std::string file, trusted, adapter;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* verify = cmd->add_subcommand(
      "verify",
      "Verify a compute receipt. The checks, in order: it is a well-formed LP-105 v1 receipt "
      "(every field present and of the right type, no others; chainId 122, functionCall "
      "bitdelta_adaptation, computeProof.type software-signature, teeQuote null; key id of its "
      "public key); the signer is a trusted key (with --trusted-keys); the Ed25519 signature "
      "verifies over the receipt's canonical JSON (RFC 8785), so whitespace and member order "
      "do not matter but any edited value does; and, with --adapter, the file's SHA-256 and size "
      "are the receipt's adapterHash and adapterBytes and its base fingerprint is modelHash. "
      "Exit status 0 when valid, 1 naming the check that failed (malformed, unknown key, bad "
      "signature, adapter mismatch)");
  verify->add_option("FILE", o->file, "The receipt (JSON)")->required()->check(CLI::ExistingFile);
  verify->add_option("--trusted-keys", o->trusted,
                     "Folder of trusted public keys (*.json, see bitdelta keys generate); without "
                     "it the receipt is checked against the key it names, which proves it was "
                     "not edited but not who signed it");
  verify
      ->add_option("--adapter", o->adapter,
                   "The adapter (.bdelta) the receipt should describe: its bytes and base "
                   "fingerprint are checked too")
      ->check(CLI::ExistingFile);
  verify->add_flag("--json", o->json, "Print the result as JSON");
  auto* show = cmd->add_subcommand(
      "show",
      "Print a receipt's fields readably (error naming the field if it is malformed). The "
      "signature is not checked: use receipt verify for that");
  show->add_option("FILE", o->file, "The receipt (JSON)")->required()->check(CLI::ExistingFile);
  runner = [=] {
    const std::string text = read_file(o->file);
    if (show->parsed()) {
      print_receipt(o->file, parse_receipt(text, o->file));
      return 0;
    }
    std::optional<TrustedKeys> trusted;
    if (!o->trusted.empty()) trusted.emplace(TrustedKeys::load(o->trusted));
    std::optional<std::filesystem::path> adapter;
    if (!o->adapter.empty()) adapter = o->adapter;
    const ReceiptCheck c = verify_receipt(text, trusted ? &*trusted : nullptr, adapter);
    const bool ok = c.status == ReceiptStatus::kValid;
    if (o->json) {
      nlohmann::json j = {{"file", o->file},
                          {"status", status_name(c.status)},
                          {"valid", ok},
                          {"trusted", c.trusted},
                          {"adapter_checked", ok && adapter.has_value()},
                          {"message", c.message}};
      if (c.receipt) {
        j["adapter_id"] = c.receipt->job.adapter_id;
        j["key_id"] = c.receipt->key_id;
        j["timestamp"] = c.receipt->job.timestamp;
      }
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print("{}: {}\n", o->file, c.message);
    }
    return ok ? 0 : 1;
  };
  return cmd;
}

}  // namespace bitdelta::cli
