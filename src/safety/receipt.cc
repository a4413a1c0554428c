#include "safety/receipt.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <set>
#include <vector>

#include "delta/adapter.h"
#include "delta/adapter_id.h"
#include "util/canonical_json.h"
#include "util/error.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kStatementHeader = "bitdelta-compute-receipt-v1\n";
constexpr const char* kStandard = "LP-105";
constexpr int kReceiptVersion = 1;
constexpr const char* kType = "ComputeReceipt";
constexpr int kChainId = 122;  // Lux mainnet
constexpr const char* kFunctionCall = "bitdelta_adaptation";
constexpr const char* kProofType = "software-signature";
constexpr const char* kAlgorithm = "Ed25519";
// Whole numbers in a receipt stay within what a double holds exactly (canonical_json refuses
// more), so that every JSON reader sees the same value.
constexpr double kMaxWhole = 9007199254740992.0;  // 2^53

std::string now_utc() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
}

bool is_lower_hex(std::string_view s, size_t digits) {
  if (s.size() != digits) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void check_hex(std::string_view value, size_t digits, const std::string& what, const char* field,
               const char* meaning) {
  if (!is_lower_hex(value, digits)) {
    fail("{}: {} must be {} lowercase hex digits ({}), found \"{}\"", what, field, digits, meaning,
         value);
  }
}

// RFC 3339 in UTC: 2026-05-01T12:00:00Z, optionally with a fraction of a second.
bool is_rfc3339_utc(std::string_view t) {
  auto digits = [&](size_t at, size_t n) {
    if (at + n > t.size()) return -1;
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return -1;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':' ||
      t.back() != 'Z') {
    return false;
  }
  const int year = digits(0, 4), month = digits(5, 2), day = digits(8, 2);
  const int hour = digits(11, 2), minute = digits(14, 2), second = digits(17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60) {
    return false;
  }
  if (t.size() == 20) return true;
  // A fraction: ".d+" between the seconds and the Z.
  return t[19] == '.' && t.size() > 21 && digits(20, t.size() - 21) >= 0 && t.size() - 21 <= 9;
}

void check_number(double v, const std::string& what, const char* field, const char* expected,
                  bool ok) {
  if (!std::isfinite(v) || !ok) fail("{}: {} must be {}, found {}", what, field, expected, v);
}

// The checks make_receipt and parse_receipt share: everything about the job's values that the
// JSON types alone do not say.
void check_job(const ReceiptInputs& in, const std::string& what) {
  check_hex(in.model_hash, 64, what, "jobSpec.modelHash", "the base model's fingerprint");
  if (in.requester_lux_id.empty()) {
    fail(
        "{}: jobSpec.requesterLuxId must name the user the adapter was made for (e.g. "
        "did:lux:122:0xabc), found an empty string",
        what);
  }
  AdapterId id;
  try {
    id = AdapterId::parse(in.adapter_id);
  } catch (const Error& e) {
    fail("{}: jobSpec.adapterId: {}", what, e.what());
  }
  if (id.domain != in.domain) {
    fail("{}: jobSpec.domain \"{}\" is not the domain of jobSpec.adapterId \"{}\" (\"{}\")", what,
         in.domain, in.adapter_id, id.domain);
  }
  check_hex(in.adapter_hash, 64, what, "jobSpec.adapterHash", "the SHA-256 of the .bdelta file");
  check_hex(in.input_hash, 64, what, "jobSpec.inputHash",
            "the SHA-256 of the interaction records file");
  if (static_cast<double>(in.adapter_bytes) > kMaxWhole ||
      static_cast<double>(in.train_tokens) > kMaxWhole) {
    fail("{}: jobSpec.adapterBytes and performanceMetrics.train_tokens must be at most 2^53", what);
  }
  check_number(in.compression_ratio, what, "jobSpec.compressionRatio", "a number > 0",
               in.compression_ratio > 0);
  if (in.quality_score) {
    check_number(*in.quality_score, what, "performanceMetrics.quality_score",
                 "a finite number or null", true);
  }
  if (in.safety_score) {
    check_number(*in.safety_score, what, "performanceMetrics.safety_score",
                 "a finite number or null", true);
  }
  if (in.dp) {
    check_number(in.dp->epsilon, what, "performanceMetrics.epsilon", "a number > 0",
                 in.dp->epsilon > 0);
    check_number(in.dp->delta, what, "performanceMetrics.delta", "a number in [0, 1)",
                 in.dp->delta >= 0 && in.dp->delta < 1);
  }
  check_number(in.seconds, what, "performanceMetrics.seconds", "a number ≥ 0", in.seconds >= 0);
  if (!is_rfc3339_utc(in.timestamp)) {
    fail("{}: timestamp must be an RFC 3339 time in UTC like 2026-05-01T12:00:00Z, found \"{}\"",
         what, in.timestamp);
  }
}

// The signed statement for a receipt's JSON: the header, then the canonical form of everything
// but computeProof.signature.
std::string statement_of(json receipt) {
  receipt["computeProof"].erase("signature");
  return std::string(kStatementHeader) + canonical_json(receipt);
}

// JSON text to a value, refusing what nlohmann would otherwise accept quietly: duplicate member
// names (the last would win, so that two readers could see different receipts; RFC 8785 §3.1
// requires I-JSON, which forbids them).
json parse_strict_json(std::string_view text, const std::string& what) {
  std::vector<std::set<std::string>> open;
  std::string duplicate;
  const json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == json::parse_event_t::key && !open.empty()) {
      const std::string& name = parsed.get_ref<const std::string&>();
      if (!open.back().insert(name).second && duplicate.empty()) duplicate = name;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::parse_error& e) {
    fail("{} is not JSON (a receipt): syntax error at byte {}", what, e.byte);
  }
  if (!duplicate.empty()) {
    fail("{}: the member \"{}\" appears twice in one object; a receipt names each field once", what,
         duplicate);
  }
  if (!j.is_object()) fail("{} is not a JSON object (a receipt)", what);
  return j;
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "a number";
    default:
      return "not JSON";
  }
}

// One object of the receipt: refuses unknown and missing fields, and reads typed values, every
// error naming the field's path.
class Fields {
 public:
  Fields(const json& object, std::string path, const std::string& what,
         std::set<std::string> required, std::set<std::string> optional = {})
      : object_(object), path_(std::move(path)), what_(what) {
    if (!object.is_object()) {
      fail("{}: {} must be an object, found {}", what_, path_, type_name(object));
    }
    for (const auto& [name, value] : object.items()) {
      if (!required.count(name) && !optional.count(name)) {
        fail(
            "{}: unknown field {} (an LP-105 v{} receipt has only the fields in "
            "docs/receipts.md)",
            what_, field(name), kReceiptVersion);
      }
    }
    for (const std::string& name : required) {
      if (!object.contains(name)) fail("{}: {} is missing", what_, field(name));
    }
  }

  std::string field(const std::string& name) const {
    return path_.empty() ? name : path_ + "." + name;
  }
  bool has(const std::string& name) const { return object_.contains(name); }
  const json& at(const std::string& name) const { return object_.at(name); }

  std::string string(const std::string& name) const {
    const json& v = object_.at(name);
    if (!v.is_string()) fail("{}: {} must be a string, found {}", what_, field(name), type_name(v));
    return v.get<std::string>();
  }
  double number(const std::string& name) const {
    const json& v = object_.at(name);
    if (!v.is_number()) fail("{}: {} must be a number, found {}", what_, field(name), type_name(v));
    return v.get<double>();
  }
  std::optional<double> number_or_null(const std::string& name) const {
    if (object_.at(name).is_null()) return std::nullopt;
    const json& v = object_.at(name);
    if (!v.is_number()) {
      fail("{}: {} must be a number or null, found {}", what_, field(name), type_name(v));
    }
    return v.get<double>();
  }
  // A whole number in [0, 2^53], in any spelling (1000, 1e3, 1000.0).
  uint64_t whole(const std::string& name) const {
    const json& v = object_.at(name);
    if (v.is_number_unsigned() && v.get<uint64_t>() <= kMaxWhole) return v.get<uint64_t>();
    const double d = v.is_number() ? v.get<double>() : -1;
    if (!v.is_number() || d < 0 || d > kMaxWhole || std::floor(d) != d) {
      fail("{}: {} must be a whole number ≥ 0, found {}", what_, field(name),
           v.is_number() ? v.dump() : type_name(v));
    }
    return static_cast<uint64_t>(d);
  }
  // A field whose value is fixed by the standard.
  void constant(const std::string& name, const json& expected) const {
    const json& v = object_.at(name);
    const bool same = expected.is_number()
                          ? v.is_number() && v.get<double>() == expected.get<double>()
                          : v == expected;
    if (!same) {
      fail("{}: {} must be {}, found {}", what_, field(name), expected.dump(), v.dump());
    }
  }

 private:
  const json& object_;
  std::string path_;
  const std::string& what_;
};

ComputeReceipt parse_receipt_json(const json& j, const std::string& what) {
  const Fields top(j, "", what,
                   {"standard", "receiptVersion", "type", "jobSpec", "performanceMetrics",
                    "timestamp", "computeProof"});
  top.constant("standard", kStandard);
  top.constant("receiptVersion", kReceiptVersion);
  top.constant("type", kType);

  ComputeReceipt r;
  ReceiptInputs& in = r.job;
  const Fields spec(j.at("jobSpec"), "jobSpec", what,
                    {"chainId", "functionCall", "modelHash", "requesterLuxId", "compressionRatio",
                     "adapterId", "adapterHash", "adapterBytes", "domain", "jobId", "inputHash"});
  spec.constant("chainId", kChainId);
  spec.constant("functionCall", kFunctionCall);
  in.model_hash = spec.string("modelHash");
  in.requester_lux_id = spec.string("requesterLuxId");
  in.compression_ratio = spec.number("compressionRatio");
  in.adapter_id = spec.string("adapterId");
  in.adapter_hash = spec.string("adapterHash");
  in.adapter_bytes = spec.whole("adapterBytes");
  in.domain = spec.string("domain");
  in.job_id = spec.string("jobId");
  in.input_hash = spec.string("inputHash");

  const Fields metrics(
      j.at("performanceMetrics"), "performanceMetrics", what,
      {"compression_ratio", "quality_score", "safety_score", "train_tokens", "seconds"},
      {"epsilon", "delta"});
  // LP-105 states the ratio twice (in the job and among the metrics); one job has one ratio.
  const double measured_ratio = metrics.number("compression_ratio");
  if (measured_ratio != in.compression_ratio) {
    fail("{}: performanceMetrics.compression_ratio ({}) must equal jobSpec.compressionRatio ({})",
         what, measured_ratio, in.compression_ratio);
  }
  in.quality_score = metrics.number_or_null("quality_score");
  in.safety_score = metrics.number_or_null("safety_score");
  if (metrics.has("epsilon") != metrics.has("delta")) {
    fail(
        "{}: {} is missing: performanceMetrics.epsilon and .delta come together (both when the "
        "fine-tune ran DP-SGD, neither otherwise)",
        what, metrics.field(metrics.has("epsilon") ? "delta" : "epsilon"));
  }
  if (metrics.has("epsilon")) {
    in.dp = ReceiptInputs::Privacy{metrics.number("epsilon"), metrics.number("delta")};
  }
  in.train_tokens = metrics.whole("train_tokens");
  in.seconds = metrics.number("seconds");

  in.timestamp = top.string("timestamp");

  const Fields proof(j.at("computeProof"), "computeProof", what,
                     {"type", "algorithm", "keyId", "publicKey", "signature", "teeQuote"});
  r.proof_type = proof.string("type");
  if (r.proof_type != kProofType) {
    fail(
        "{}: computeProof.type \"{}\" is not known to this build, which verifies \"{}\" proofs "
        "only; a receipt with a proof type the verifier does not know is rejected",
        what, r.proof_type, kProofType);
  }
  proof.constant("algorithm", kAlgorithm);
  r.algorithm = kAlgorithm;
  if (!proof.at("teeQuote").is_null()) {
    fail(
        "{}: computeProof.teeQuote must be null for a \"{}\" proof (no TEE attested this job), "
        "found {}",
        what, kProofType, type_name(proof.at("teeQuote")));
  }
  r.key_id = proof.string("keyId");
  r.public_key = proof.string("publicKey");
  r.signature = proof.string("signature");
  check_hex(r.public_key, 64, what, "computeProof.publicKey", "an Ed25519 public key");
  check_hex(r.key_id, 32, what, "computeProof.keyId", "the public key's id");
  check_hex(r.signature, 128, what, "computeProof.signature", "an Ed25519 signature");
  const PublicKey key = parse_public_key(r.public_key, what + ": computeProof");
  if (key.key_id != r.key_id) {
    fail("{}: computeProof.keyId {} is not the id of computeProof.publicKey (its id is {})", what,
         r.key_id, key.key_id);
  }
  check_job(in, what);
  return r;
}

}  // namespace

void describe_adapter(const fs::path& adapter, ReceiptInputs& inputs) {
  if (!fs::is_regular_file(adapter)) fail("'{}' is not a file (an adapter)", adapter.string());
  inputs.adapter_hash = sha256_file(adapter);
  inputs.adapter_bytes = fs::file_size(adapter);
  const auto a = Adapter::open(adapter);
  inputs.model_hash = a->base_fingerprint();
  inputs.adapter_id = a->id().to_string();
  inputs.domain = a->id().domain;
  if (inputs.requester_lux_id.empty()) {
    const auto user = a->metadata().find("user_id");
    inputs.requester_lux_id = user != a->metadata().end() ? user->second : a->id().user;
  }
}

json ComputeReceipt::to_json() const {
  const ReceiptInputs& in = job;
  json metrics = {{"compression_ratio", in.compression_ratio},
                  {"quality_score", in.quality_score ? json(*in.quality_score) : json(nullptr)},
                  {"safety_score", in.safety_score ? json(*in.safety_score) : json(nullptr)},
                  {"train_tokens", in.train_tokens},
                  {"seconds", in.seconds}};
  if (in.dp) {
    metrics["epsilon"] = in.dp->epsilon;
    metrics["delta"] = in.dp->delta;
  }
  return json{{"standard", kStandard},
              {"receiptVersion", kReceiptVersion},
              {"type", kType},
              {"jobSpec",
               {{"chainId", kChainId},
                {"functionCall", kFunctionCall},
                {"modelHash", in.model_hash},
                {"requesterLuxId", in.requester_lux_id},
                {"compressionRatio", in.compression_ratio},
                {"adapterId", in.adapter_id},
                {"adapterHash", in.adapter_hash},
                {"adapterBytes", in.adapter_bytes},
                {"domain", in.domain},
                {"jobId", in.job_id},
                {"inputHash", in.input_hash}}},
              {"performanceMetrics", metrics},
              {"timestamp", in.timestamp},
              {"computeProof",
               {{"type", proof_type},
                {"algorithm", algorithm},
                {"keyId", key_id},
                {"publicKey", public_key},
                {"signature", signature},
                {"teeQuote", nullptr}}}};
}

std::string ComputeReceipt::statement() const { return statement_of(to_json()); }

ComputeReceipt make_receipt(const ReceiptInputs& inputs, const SigningKey& key) {
  ComputeReceipt r;
  r.job = inputs;
  if (r.job.timestamp.empty()) r.job.timestamp = now_utc();
  check_job(r.job, "the receipt");
  r.key_id = key.public_key().key_id;
  r.public_key = key.public_key().hex();
  r.signature = to_hex(key.sign(r.statement()));
  return r;
}

std::string receipt_text(const ComputeReceipt& receipt) {
  return canonical_json(receipt.to_json()) + "\n";
}

ComputeReceipt parse_receipt(std::string_view text, const std::string& what) {
  return parse_receipt_json(parse_strict_json(text, what), what);
}

std::string_view status_name(ReceiptStatus status) {
  switch (status) {
    case ReceiptStatus::kValid:
      return "valid";
    case ReceiptStatus::kMalformed:
      return "malformed";
    case ReceiptStatus::kUnknownKey:
      return "unknown key";
    case ReceiptStatus::kBadSignature:
      return "bad signature";
    case ReceiptStatus::kAdapterMismatch:
      return "adapter mismatch";
  }
  return "?";
}

ReceiptCheck verify_receipt(std::string_view text, const TrustedKeys* trusted,
                            const std::optional<fs::path>& adapter) {
  ReceiptCheck c;
  json received;
  try {
    received = parse_strict_json(text, "the receipt");
    c.receipt = parse_receipt_json(received, "the receipt");
  } catch (const Error& e) {
    c.status = ReceiptStatus::kMalformed;
    c.message = fmt::format("malformed: {}", e.what());
    return c;
  }
  const ComputeReceipt& r = *c.receipt;
  PublicKey key = parse_public_key(r.public_key, "the receipt");
  if (trusted != nullptr) {
    const PublicKey* known = trusted->find(r.key_id);
    if (known == nullptr) {
      c.status = ReceiptStatus::kUnknownKey;
      c.message = fmt::format("unknown key: the signer {} is not among the trusted keys", r.key_id);
      return c;
    }
    key = *known;
    c.trusted = true;
  }
  // What was received, canonicalized: any JSON spelling of the signed receipt verifies.
  std::array<uint8_t, 64> signature{};
  from_hex(r.signature, signature, "the receipt: computeProof.signature");
  if (!verify_signature(key, statement_of(received), signature)) {
    c.status = ReceiptStatus::kBadSignature;
    c.message = fmt::format(
        "bad signature: it does not verify with key {} (forged, or a field was edited after "
        "signing)",
        r.key_id);
    return c;
  }
  if (adapter) {
    const std::string sha = sha256_file(*adapter);
    const uint64_t bytes = fs::file_size(*adapter);
    if (sha != r.job.adapter_hash || bytes != r.job.adapter_bytes) {
      c.status = ReceiptStatus::kAdapterMismatch;
      c.message = fmt::format(
          "adapter mismatch: the receipt is for {} bytes with SHA-256 {}; {} has {} bytes with "
          "SHA-256 {}",
          r.job.adapter_bytes, r.job.adapter_hash, adapter->string(), bytes, sha);
      return c;
    }
    std::string fingerprint;
    try {
      fingerprint = Adapter::open(*adapter)->base_fingerprint();
    } catch (const Error& e) {
      c.status = ReceiptStatus::kAdapterMismatch;
      c.message = fmt::format(
          "adapter mismatch: the receipt names a file that is not a readable "
          "adapter: {}",
          e.what());
      return c;
    }
    if (fingerprint != r.job.model_hash) {
      c.status = ReceiptStatus::kAdapterMismatch;
      c.message = fmt::format(
          "adapter mismatch: the adapter was made for base {}, the receipt names model {}",
          fingerprint, r.job.model_hash);
      return c;
    }
  }
  c.status = ReceiptStatus::kValid;
  c.message =
      fmt::format("valid: {} for {} on model {}, signed by {} on {}{}{}", r.job.adapter_id,
                  r.job.requester_lux_id, r.job.model_hash.substr(0, 12), r.key_id, r.job.timestamp,
                  trusted != nullptr ? " (a trusted key)" : " (not checked against trusted keys)",
                  adapter ? "; the adapter file matches" : "");
  return c;
}

std::filesystem::path receipt_path(const std::filesystem::path& adapter) {
  std::filesystem::path p = adapter;
  p += ".receipt.json";
  return p;
}

}  // namespace bitdelta
