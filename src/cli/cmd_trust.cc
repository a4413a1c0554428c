// bitdelta keys generate / sign / verify: Ed25519 keys and detached adapter signatures
// (docs/signatures.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "delta/signature.h"
#include "store/audit_log.h"
#include "train/privacy.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta::cli {

CLI::App* register_keys(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "keys", "Ed25519 signing keys for adapters (libsodium). Subcommands: generate");
  cmd->require_subcommand(1);
  auto out = std::make_shared<std::string>();
  auto* generate = cmd->add_subcommand(
      "generate",
      "Make a new key pair in a folder: signing_key.json (the private key, mode 0600: keep it "
      "secret) and public_key.json (give it to whoever verifies, e.g. a server's "
      "--trusted-keys folder). The key id is the first 16 bytes of the public key's SHA-256");
  generate->add_option("--out", *out, "Folder for the key (created if missing; never overwritten)")
      ->required();
  runner = [=] {
    const PublicKey key = SigningKey::generate(*out);
    fmt::print("key {} in {} (private: signing_key.json, mode 0600; public: public_key.json)\n",
               key.key_id, *out);
    return 0;
  };
  return cmd;
}

CLI::App* register_sign(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "sign",
      "Sign an adapter file: writes the detached signature F.sig.json (the file's SHA-256 and "
      "size, the key id and public key, the time, and an Ed25519 signature over them)");
  struct Options {
    std::string file, key, out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("FILE", o->file, "The adapter (.bdelta)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--key", o->key, "Key folder (bitdelta keys generate)")->required();
  cmd->add_option("--out", o->out, "Signature file (default: FILE.sig.json), written atomically");
  runner = [=] {
    const SigningKey key = SigningKey::load(o->key);
    const AdapterSignature s = sign_adapter(o->file, key);
    const std::filesystem::path out =
        o->out.empty() ? signature_path(o->file) : std::filesystem::path(o->out);
    write_file_atomic(out, s.to_json().dump(2) + "\n");
    fmt::print("signed {} ({} bytes, sha256 {}) with key {}: {}\n", o->file, s.file_bytes,
               s.file_sha256, s.key_id, out.string());
    return 0;
  };
  return cmd;
}

CLI::App* register_verify(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "verify",
      "Verify an adapter's detached signature: that it is readable, that the signer is a "
      "trusted key (with --trusted-keys), that the signature verifies, and that it signs this "
      "file's bytes. Exit status 0 when valid, 1 with the check that failed otherwise");
  struct Options {
    std::string file, signature, trusted;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("FILE", o->file, "The adapter (.bdelta)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--signature", o->signature, "Signature file (default: FILE.sig.json)");
  cmd->add_option("--trusted-keys", o->trusted,
                  "Folder of trusted public keys (*.json); without it the signature is checked "
                  "against the key it names, which proves integrity but not origin");
  cmd->add_flag("--json", o->json, "Print the result as JSON");
  runner = [=] {
    std::optional<TrustedKeys> trusted;
    if (!o->trusted.empty()) trusted.emplace(TrustedKeys::load(o->trusted));
    const std::filesystem::path sig =
        o->signature.empty() ? signature_path(o->file) : std::filesystem::path(o->signature);
    std::optional<std::string> text;
    if (std::filesystem::exists(sig)) {
      text = read_file(sig);
    } else if (!o->signature.empty()) {
      fail("the signature file '{}' does not exist", sig.string());
    }
    const SignatureCheck c =
        check_adapter_signature(sha256_file(o->file), std::filesystem::file_size(o->file), text,
                                trusted ? &*trusted : nullptr);
    const bool ok = c.status == SignatureStatus::kValid;
    if (o->json) {
      nlohmann::json j = {{"file", o->file},
                          {"status", status_name(c.status)},
                          {"valid", ok},
                          {"trusted", c.trusted},
                          {"message", c.message}};
      if (c.signature) {
        j["key_id"] = c.signature->key_id;
        j["signed_at"] = c.signature->signed_at;
      }
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print("{}: {}\n", o->file, c.message);
    }
    return ok ? 0 : 1;
  };
  return cmd;
}

CLI::App* register_audit(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "audit", "The store's hash-chained audit log (docs/audit.md). Subcommands: verify, show");
  cmd->require_subcommand(1);
  struct Options {
    std::string log, trusted;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* verify = cmd->add_subcommand(
      "verify",
      "Check the audit log's chain: every entry parses, numbers run 1, 2, 3..., each entry holds "
      "the SHA-256 of the one before, nothing is cut off, and the head file names the last entry "
      "(signed by a trusted key, with --trusted-keys). Finds an edited, removed or reordered "
      "entry and a truncated tail; exit status 1 naming the first problem");
  verify->add_option("LOG", o->log, "The log (STORE/audit.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  verify->add_option("--trusted-keys", o->trusted, "The head must be signed by one of these keys");
  verify->add_flag("--json", o->json, "Print the result as JSON");
  auto* show = cmd->add_subcommand(
      "show",
      "Print the log's entries, one JSON object per line (a damaged log too, with a warning)");
  show->add_option("LOG", o->log, "The log (STORE/audit.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  runner = [=] {
    if (show->parsed()) {
      // Shown as it is, damaged or not (verify says what is wrong).
      const std::string text = read_file(o->log);
      fmt::print("{}", text);
      if (!text.empty() && text.back() != '\n') fmt::print("\n");
      const AuditVerification v = verify_audit_log(o->log);
      if (!v.ok) fmt::print(stderr, "warning: {}\n", v.problem);
      return 0;
    }
    std::optional<TrustedKeys> trusted;
    if (!o->trusted.empty()) trusted.emplace(TrustedKeys::load(o->trusted));
    const AuditVerification v = verify_audit_log(o->log, trusted ? &*trusted : nullptr);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"log", o->log},
                                        {"ok", v.ok},
                                        {"entries", v.entries},
                                        {"head_signed", v.head_signed},
                                        {"problem", v.problem}}
                             .dump(2));
    } else if (v.ok) {
      fmt::print("{}: {} entries, chain intact{}\n", o->log, v.entries,
                 v.head_signed ? ", head signed" : "");
    } else {
      fmt::print("{}: {}\n", o->log, v.problem);
    }
    return v.ok ? 0 : 1;
  };
  return cmd;
}

}  // namespace bitdelta::cli

namespace bitdelta::cli {

CLI::App* register_privacy(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "privacy",
      "The Rényi-DP accountant of DP-SGD (docs/privacy.md): the ε spent after --steps at "
      "sampling rate --sample-rate (batch / examples) with noise multiplier --noise, or, with "
      "--epsilon, the smallest noise multiplier that stays within it");
  struct Options {
    double q = 0, noise = 0, delta = 1e-5, epsilon = 0;
    int64_t steps = 0;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--sample-rate", o->q,
                  "Probability that an example is in a batch (batch / examples)")
      ->required()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--steps", o->steps, "Optimizer steps")->required()->check(non_negative());
  cmd->add_option("--delta", o->delta, "δ (below 1 / examples)")->capture_default_str();
  auto* noise = cmd->add_option("--noise", o->noise, "Noise multiplier σ (noise std ÷ clip norm)")
                    ->check(number_at_least(0, false));
  auto* eps = cmd->add_option("--epsilon", o->epsilon, "Target ε: find the noise multiplier")
                  ->check(number_at_least(0, false));
  noise->excludes(eps);
  cmd->add_flag("--json", o->json, "Print JSON");
  runner = [=] {
    if (o->noise <= 0 && o->epsilon <= 0)
      fail("give --noise (to get ε) or --epsilon (to get the noise)");
    const double sigma =
        o->noise > 0 ? o->noise : dp_sgd_noise_for_epsilon(o->q, o->steps, o->delta, o->epsilon);
    const PrivacySpent s = dp_sgd_epsilon(o->q, sigma, o->steps, o->delta);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"sample_rate", o->q},
                                        {"steps", o->steps},
                                        {"delta", o->delta},
                                        {"noise_multiplier", sigma},
                                        {"epsilon", s.epsilon},
                                        {"order", s.order}}
                             .dump(2));
    } else {
      fmt::print(
          "noise multiplier {:.4g}, sampling rate {:.4g}, {} steps: (ε = {:.4g}, δ = {:g})-DP "
          "(RDP order {:g})\n",
          sigma, o->q, o->steps, s.epsilon, o->delta, s.order);
    }
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
