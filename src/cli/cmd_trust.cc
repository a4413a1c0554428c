// bitdelta keys generate / sign / verify: Ed25519 keys and detached adapter signatures
// (docs/signatures.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "delta/signature.h"
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

}  // namespace bitdelta::cli
