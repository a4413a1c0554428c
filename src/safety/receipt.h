// LP-105 compute receipts (docs/receipts.md): a signed statement that this build made adapter X
// (its SHA-256 and size) for user U on base model M from the interaction records with SHA-256 H,
// with these metrics. The receipt is canonical JSON (RFC 8785, util/canonical_json.h) and the
// Ed25519 signature covers every field but the signature itself, so a verifier in any language
// can check it after re-serializing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "util/keys.h"

namespace bitdelta {

// What went into and came out of one adaptation job: everything a receipt states except the
// time and the proof.
struct ReceiptInputs {
  std::string model_hash;        // the base's fingerprint (the adapter's base_fingerprint), 64 hex
  std::string requester_lux_id;  // the user the adapter was made for, e.g. did:lux:122:0xabc
  std::string adapter_id;        // domain/user/vN
  std::string adapter_hash;      // SHA-256 of the .bdelta file, 64 hex
  uint64_t adapter_bytes = 0;
  std::string domain;      // the adapter id's domain
  std::string job_id;      // the server's job id; empty when run from the CLI
  std::string input_hash;  // SHA-256 of the interaction records file, 64 hex

  double compression_ratio = 0;         // > 0: fine-tuned weight bytes / adapter bytes
  std::optional<double> quality_score;  // e.g. quality retained; nullopt: not measured
  std::optional<double> safety_score;   // nullopt: not measured
  struct Privacy {
    double epsilon = 0;  // > 0
    double delta = 0;    // in [0, 1)
  };
  std::optional<Privacy> dp;  // only when the fine-tune ran DP-SGD
  uint64_t train_tokens = 0;
  double seconds = 0;  // wall time of the job

  std::string timestamp;  // RFC 3339 UTC; empty: now
};

// Fills the adapter fields of `inputs` from the file: adapter_hash and adapter_bytes from its
// bytes; model_hash, adapter_id, domain and (when empty) requester_lux_id from its metadata.
// Error naming the file when it is not a readable adapter.
void describe_adapter(const std::filesystem::path& adapter, ReceiptInputs& inputs);

struct ComputeReceipt {
  ReceiptInputs job;  // with timestamp set
  // computeProof
  std::string proof_type = "software-signature";
  std::string algorithm = "Ed25519";
  std::string key_id;      // 32 hex: the signer's key id (util/keys.h)
  std::string public_key;  // 64 hex
  std::string signature;   // 128 hex

  // The receipt as JSON (members in no particular order; receipt_text writes the canonical form).
  nlohmann::json to_json() const;
  // What the signature signs: "bitdelta-compute-receipt-v1\n" then the canonical JSON of the
  // receipt with computeProof.signature removed.
  std::string statement() const;
};

// Checks `inputs` (hex lengths, the adapter id and its domain, finite and in-range numbers, the
// timestamp) and signs them with `key`. Error naming the field for anything invalid.
ComputeReceipt make_receipt(const ReceiptInputs& inputs, const SigningKey& key);

// Where a receipt of the adapter file F is kept beside it: F.receipt.json.
std::filesystem::path receipt_path(const std::filesystem::path& adapter);

// The receipt as stored and served: canonical JSON and a newline.
std::string receipt_text(const ComputeReceipt& receipt);

// Reads a receipt in any JSON spelling (whitespace, member order, number forms do not matter).
// Error naming `what` and the field path (e.g. "jobSpec.modelHash") with what is expected, for:
// text that is not one JSON object, duplicate member names, a missing or unknown field at any
// level, a wrong type, a wrong constant (standard, receiptVersion, type, chainId, functionCall,
// computeProof.type/algorithm, a teeQuote that is not null), bad hex, a key id that is not the
// public key's, an invalid adapter id or timestamp. The signature is not checked here.
ComputeReceipt parse_receipt(std::string_view text, const std::string& what);

enum class ReceiptStatus {
  kValid,            // the signature verifies, by a trusted key (or, with none given, by the key
                     // the receipt names), and the adapter (when given) is the one it describes
  kMalformed,        // not a receipt (see parse_receipt)
  kUnknownKey,       // a signer that is not among the trusted keys
  kBadSignature,     // the signature does not verify: forged, or a field was edited
  kAdapterMismatch,  // a good receipt of another adapter file, or of another base
};
std::string_view status_name(ReceiptStatus status);  // "valid", "malformed", "unknown key", ...

struct ReceiptCheck {
  ReceiptStatus status = ReceiptStatus::kMalformed;
  std::string message;                    // for people: which check failed and what it means
  std::optional<ComputeReceipt> receipt;  // when it parsed
  bool trusted = false;  // checked against a trusted key (not just the key it names)
};

// Checks, in this order: the receipt parses; its signer is trusted (when `trusted` is given);
// the signature verifies over the canonical form of what was received; and, with `adapter`, that
// the file's SHA-256 and size are adapterHash/adapterBytes and its base_fingerprint metadata is
// modelHash.
ReceiptCheck verify_receipt(std::string_view text, const TrustedKeys* trusted,
                            const std::optional<std::filesystem::path>& adapter = std::nullopt);

}  // namespace bitdelta
