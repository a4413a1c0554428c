#include "io/safetensors.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_set>

#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

using nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::to_f32() const {
  if (!is_float_weight(dtype())) {
    fail("tensor '{}' has dtype {}, expected F32, F16 or BF16", name(), dtype_name(dtype()));
  }
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_to_f32(dtype(), data, out.data(), out.size());
  return out;
}

namespace {

// Rejects duplicate top-level keys, which nlohmann::json would otherwise silently collapse.
json parse_header_json(std::string_view text, const std::string& what) {
  std::unordered_set<std::string> seen;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), callback);
  } catch (const json::parse_error& e) {
    fail("{}: the safetensors header is not valid JSON ({}); the file is corrupt or not a "
         "safetensors file",
         what, e.what());
  }
  if (!duplicate.empty()) fail("{}: tensor '{}' appears twice in the header", what, duplicate);
  if (!header.is_object()) fail("{}: the safetensors header must be a JSON object", what);
  return header;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

}  // namespace

void parse_safetensors_header(std::string_view header_json, uint64_t data_bytes,
                              const std::string& what, std::vector<TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata) {
  json header = parse_header_json(header_json, what);
  tensors->clear();
  metadata->clear();
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: __metadata__ must be an object of strings", what);
      for (auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          fail("{}: __metadata__ value for '{}' must be a string (safetensors allows only "
               "string to string)",
               what, key);
        }
        (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("{}: entry for tensor '{}' is not an object", what, name);
    TensorInfo info;
    info.name = name;
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      fail("{}: tensor '{}' has no dtype string", what, name);
    }
    auto dtype = parse_dtype(dtype_it->get<std::string>());
    if (!dtype) {
      fail("{}: tensor '{}' has unsupported dtype '{}' (supported: F32, F16, BF16, U8, I8, I32, "
           "I64, F64, BOOL)",
           what, name, dtype_it->get<std::string>());
    }
    info.dtype = *dtype;
    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) {
      fail("{}: tensor '{}' has no shape array", what, name);
    }
    uint64_t numel = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) {
        fail("{}: tensor '{}' has a shape entry that is not a non-negative integer", what, name);
      }
      uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !checked_mul(numel, d, &numel)) {
        fail("{}: tensor '{}' has an absurd shape (element count overflows)", what, name);
      }
      info.shape.push_back(static_cast<int64_t>(d));
    }
    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      fail("{}: tensor '{}' needs data_offsets [begin, end] of non-negative integers", what, name);
    }
    info.begin = (*offsets_it)[0].get<uint64_t>();
    info.end = (*offsets_it)[1].get<uint64_t>();
    if (info.begin > info.end) {
      fail("{}: tensor '{}' has data_offsets [{}, {}] with begin after end", what, name,
           info.begin, info.end);
    }
    if (info.end > data_bytes) {
      fail("{}: tensor '{}' has data_offsets [{}, {}] past the end of the data ({} bytes); the "
           "file is truncated or corrupt",
           what, name, info.begin, info.end, data_bytes);
    }
    uint64_t expected = 0;
    if (!checked_mul(numel, dtype_size(info.dtype), &expected) || expected != info.nbytes()) {
      fail("{}: tensor '{}' is {} with shape of {} elements, which needs {} bytes, but its "
           "data_offsets span {} bytes",
           what, name, dtype_name(info.dtype), numel, numel * dtype_size(info.dtype),
           info.nbytes());
    }
    tensors->push_back(std::move(info));
  }
  std::sort(tensors->begin(), tensors->end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < tensors->size(); ++i) {
    const auto& prev = (*tensors)[i - 1];
    const auto& cur = (*tensors)[i];
    if (cur.begin < prev.end) {
      fail("{}: tensors '{}' and '{}' overlap in the data section", what, prev.name, cur.name);
    }
  }
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile st;
  st.file_ = MappedFile::open(path);
  const std::string what = path.string();
  if (st.file_.size() < 8) {
    fail("{}: too short to be a safetensors file ({} bytes; it needs at least an 8-byte header "
         "length)",
         what, st.file_.size());
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | st.file_.data()[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    fail("{}: header length {} is absurd (limit {} bytes); the file is corrupt or not a "
         "safetensors file",
         what, header_len, kMaxSafetensorsHeaderBytes);
  }
  if (header_len + 8 > st.file_.size()) {
    fail("{}: header length {} runs past the end of the file ({} bytes); the file is truncated",
         what, header_len, st.file_.size());
  }
  st.data_offset_ = 8 + header_len;
  std::string_view header(reinterpret_cast<const char*>(st.file_.data()) + 8, header_len);
  parse_safetensors_header(header, st.file_.size() - st.data_offset_, what, &st.tensors_,
                           &st.metadata_);
  for (size_t i = 0; i < st.tensors_.size(); ++i) st.index_.emplace(st.tensors_[i].name, i);
  return st;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail("{}: no tensor named '{}'", path().string(), name);
  return view(*info);
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  return TensorView{&info, file_.data() + data_offset_ + info.begin};
}

std::string xxh3_hex(std::span<const uint8_t> bytes) {
  return fmt::format("{:016x}", XXH3_64bits(bytes.data(), bytes.size()));
}

std::string checksum_header_text(const std::map<std::string, std::string>& metadata,
                                 const std::vector<TensorInfo>& tensors) {
  std::string text;
  for (const auto& [key, value] : metadata) {
    if (key == kChecksumsKey) continue;
    text += fmt::format("m {} {} {} {}\n", key.size(), key, value.size(), value);
  }
  // Data order; empty tensors can share an offset, so ties go by end, then name: the writer's
  // list and the reader's parsed header then give the same text.
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  for (const TensorInfo* t : order) {
    text += fmt::format("t {} {} {} {} {} {}\n", t->name.size(), t->name, dtype_name(t->dtype),
                        fmt::join(t->shape, "x"), t->begin, t->end);
  }
  return text;
}

ChecksumStatus SafetensorsFile::verify_checksums(ThreadPool* pool) const {
  const std::string what = path().string();
  auto it = metadata_.find(kChecksumsKey);
  if (it == metadata_.end()) return ChecksumStatus::kAbsent;
  auto corrupt = [&](const std::string& why) {
    fail("{}: the '{}' metadata {}; the file is corrupt (copy it again from its source)", what,
         kChecksumsKey, why);
  };
  json sums = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (!sums.is_object() || !sums.contains("tensors") || !sums["tensors"].is_object() ||
      !sums.contains("header") || !sums["header"].is_string() || !sums.contains("algorithm")) {
    corrupt("is not {\"algorithm\", \"header\", \"tensors\"}");
  }
  if (sums["algorithm"] != kChecksumAlgorithm) {
    fail("{}: checksum algorithm {} is not supported (this build checks {}); upgrade bitdelta",
         what, sums["algorithm"].dump(), kChecksumAlgorithm);
  }
  const std::string header_text = checksum_header_text(metadata_, tensors_);
  const std::string header_sum =
      xxh3_hex({reinterpret_cast<const uint8_t*>(header_text.data()), header_text.size()});
  if (sums["header"] != header_sum) {
    fail(
        "{}: the header (metadata or tensor table) does not match its checksum: the file was "
        "changed or damaged after it was written",
        what);
  }
  const json& tensors = sums["tensors"];
  if (tensors.size() != tensors_.size()) corrupt("does not list every tensor");
  std::vector<const std::string*> expected;
  for (const TensorInfo& t : tensors_) {
    auto sum = tensors.find(t.name);
    if (sum == tensors.end() || !sum->is_string())
      corrupt(fmt::format("lacks tensor '{}'", t.name));
    expected.push_back(&sum->get_ref<const std::string&>());
  }
  // The first tensor (in file order) whose bytes differ, found on any thread.
  std::vector<char> bad(tensors_.size(), 0);
  auto check = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      bad[static_cast<size_t>(i)] = *expected[static_cast<size_t>(i)] !=
                                    xxh3_hex(view(tensors_[static_cast<size_t>(i)]).bytes());
    }
  };
  const auto n = static_cast<int64_t>(tensors_.size());
  if (pool != nullptr) {
    pool->parallel_for(n, check);
  } else {
    check(0, n);
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    if (bad[i]) {
      fail(
          "{}: the data of tensor '{}' does not match its checksum: the file was changed or "
          "damaged after it was written",
          what, tensors_[i].name);
    }
  }
  return ChecksumStatus::kVerified;
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

void SafetensorsWriter::add_entry(Entry entry) {
  int64_t numel = 1;
  for (int64_t d : entry.shape) {
    BD_CHECK(d >= 0, "negative dimension in tensor '{}'", entry.name);
    numel *= d;
  }
  BD_CHECK(static_cast<uint64_t>(numel) * dtype_size(entry.dtype) == entry.nbytes,
           "tensor '{}': {} elements of {} need {} bytes, got {}", entry.name, numel,
           dtype_name(entry.dtype), numel * dtype_size(entry.dtype), entry.nbytes);
  BD_CHECK(entry.name != "__metadata__");
  for (const auto& e : entries_) BD_CHECK(e.name != entry.name, "tensor '{}' added twice", entry.name);
  entries_.push_back(std::move(entry));
}

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape,
                            std::span<const uint8_t> data) {
  add_entry({std::move(name), dtype, std::move(shape), data, data.size(), nullptr});
}

void SafetensorsWriter::add_generated(std::string name, DType dtype, std::vector<int64_t> shape,
                                      std::function<void(std::span<uint8_t>)> fill) {
  uint64_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<uint64_t>(d);
  add_entry({std::move(name), dtype, std::move(shape), {}, numel * dtype_size(dtype),
             std::move(fill)});
}

void SafetensorsWriter::add_owned(std::string name, DType dtype, std::vector<int64_t> shape,
                                  std::vector<uint8_t> data) {
  owned_.push_back(std::make_unique<std::vector<uint8_t>>(std::move(data)));
  add(std::move(name), dtype, std::move(shape), *owned_.back());
}

void SafetensorsWriter::add_f32(std::string name, std::vector<int64_t> shape,
                                std::span<const float> values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  add_owned(std::move(name), DType::kF32, std::move(shape), std::move(bytes));
}

std::string SafetensorsWriter::header_json(
    const std::map<std::string, std::string>& metadata) const {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.nbytes}}};
    offset += e.nbytes;
  }
  return header.dump();
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  write(path, 0, nullptr);
}

namespace {

// The safetensors length prefix: the header's size as a little-endian u64.
std::array<uint8_t, 8> length_prefix(uint64_t n) {
  std::array<uint8_t, 8> bytes;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  return bytes;
}

// The `checksums` metadata entry: the canonical header text's hash and each tensor's.
std::string checksums_entry(const std::map<std::string, std::string>& metadata,
                            const std::vector<TensorInfo>& table, const json& sums) {
  const std::string header_text = checksum_header_text(metadata, table);
  return json{{"algorithm", kChecksumAlgorithm},
              {"header", xxh3_hex({reinterpret_cast<const uint8_t*>(header_text.data()),
                                   header_text.size()})},
              {"tensors", sums}}
      .dump();
}

}  // namespace

void SafetensorsWriter::write(
    const std::filesystem::path& path, size_t header_reserve,
    const std::function<std::map<std::string, std::string>()>& late_metadata) const {
  std::map<std::string, std::string> metadata = metadata_;
  metadata.erase(kChecksumsKey);
  bool generated = false;
  for (const auto& e : entries_) generated = generated || static_cast<bool>(e.fill);
  if (checksums_ && !generated && !late_metadata) {
    // Every tensor's bytes are at hand: hash them first and write the header exactly, with no
    // room set aside (small adapters would otherwise carry kilobytes of padding).
    json sums = json::object();
    std::vector<TensorInfo> table;
    uint64_t offset = 0;
    for (const auto& e : entries_) {
      sums[e.name] = xxh3_hex(e.data);
      table.push_back({e.name, e.dtype, e.shape, offset, offset + e.nbytes});
      offset += e.nbytes;
    }
    metadata[kChecksumsKey] = checksums_entry(metadata, table, sums);
    std::string text = header_json(metadata);
    text.append((text.size() + 7) / 8 * 8 - text.size(), ' ');
    AtomicFile out(path);
    out.write(length_prefix(text.size()));
    out.write(text);
    for (const auto& e : entries_) out.write(e.data);
    out.commit();
    return;
  }
  if (checksums_) {
    // Room for the entry written once the data has been hashed: each name escaped twice (a JSON
    // string inside a JSON string), plus 16 hex digits and punctuation.
    header_reserve += 256;
    for (const auto& e : entries_) header_reserve += 2 * json(e.name).dump().size() + 40;
  }
  std::string text = header_json(metadata);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  const size_t header_size = (text.size() + header_reserve + 7) / 8 * 8;
  text.append(header_size - text.size(), ' ');
  AtomicFile out(path);
  out.write(length_prefix(text.size()));
  out.write(text);
  std::vector<uint8_t> buffer;
  json sums = json::object();
  std::vector<TensorInfo> table;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    std::span<const uint8_t> bytes = e.data;
    if (e.fill) {
      buffer.resize(e.nbytes);
      e.fill(buffer);
      bytes = buffer;
    }
    out.write(bytes);
    if (checksums_) {
      sums[e.name] = xxh3_hex(bytes);
      table.push_back({e.name, e.dtype, e.shape, offset, offset + e.nbytes});
    }
    offset += e.nbytes;
  }
  if (late_metadata || checksums_) {
    if (late_metadata) {
      for (auto& [key, value] : late_metadata()) metadata[key] = std::move(value);
    }
    metadata.erase(kChecksumsKey);  // never another file's (or a callback's) checksums
    if (checksums_) metadata[kChecksumsKey] = checksums_entry(metadata, table, sums);
    std::string final_text = header_json(metadata);
    BD_CHECK(final_text.size() <= header_size, "late metadata ({} bytes) exceeds the reserve",
             final_text.size());
    final_text.append(header_size - final_text.size(), ' ');
    out.write_at(8, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(final_text.data()),
                                             final_text.size()));
  }
  out.commit();
}

}  // namespace bitdelta
