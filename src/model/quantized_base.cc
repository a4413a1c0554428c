#include "model/quantized_base.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/log.h"

namespace bitdelta {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'B', 'D', 'Q', 'U', 'A', 'N', 'T', '1'};
constexpr uint64_t kAlign = 64;
// Version 2: codes interleaved by groups of four rows (ops/quant.h).
constexpr int kFormatVersion = 2;

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

struct Entry {
  std::string name;
  WeightMatrix* view;
  WeightMatrix source;
  Quant quant;
  uint64_t scales_offset = 0, codes_offset = 0;  // from the start of the file / buffer
  uint64_t scales_bytes() const {
    return static_cast<uint64_t>(source.rows * quant_blocks(source.cols)) * 2;
  }
  uint64_t codes_bytes() const { return quant_code_bytes_total(quant, source.rows, source.cols); }
};

std::vector<Entry> entries_of(ModelWeights& w, Quant quant) {
  std::vector<Entry> out;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& L = w.layers[l];
    const std::pair<const char*, Linear*> linears[] = {
        {"q", &L.q},       {"k", &L.k},   {"v", &L.v},      {"o", &L.o},
        {"gate", &L.gate}, {"up", &L.up}, {"down", &L.down}};
    for (const auto& [name, lin] : linears) {
      out.push_back({fmt::format("layers.{}.{}", l, name), &lin->weight, lin->weight, quant});
    }
  }
  out.push_back({"lm_head", &w.lm_head, w.lm_head, Quant::kQ8_0});
  return out;
}

// Drops the process's mapping of a source matrix's pages (they stay in the page cache and fault
// back in if read again), so hashing and quantizing do not leave the BF16 weights resident.
void release_pages(const WeightMatrix& m) {
  const long page = sysconf(_SC_PAGESIZE);
  const auto begin = reinterpret_cast<uintptr_t>(m.data) / page * page;
  const auto end = reinterpret_cast<uintptr_t>(m.data) + m.nbytes();
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

std::string cache_key(Quant quant, const std::vector<Entry>& entries) {
  XXH3_state_t* state = XXH3_createState();
  BD_CHECK(state != nullptr);
  XXH3_128bits_reset(state);
  const std::string head = fmt::format("bitdelta-quant {} {}\n", kFormatVersion, quant_name(quant));
  XXH3_128bits_update(state, head.data(), head.size());
  for (const Entry& e : entries) {
    const std::string line = fmt::format("{}\t{}\t{}x{}\t{}\n", e.name, dtype_name(e.source.dtype),
                                         e.source.rows, e.source.cols, quant_name(e.quant));
    XXH3_128bits_update(state, line.data(), line.size());
    XXH3_128bits_update(state, e.source.data, e.source.nbytes());
    release_pages(e.source);
  }
  const XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("xxh3-128:{:016x}{:016x}", h.high64, h.low64);
}

// Lays the entries out after a header of `header_bytes`; returns the total size.
uint64_t lay_out(std::vector<Entry>& entries, uint64_t header_bytes) {
  uint64_t at = align_up(header_bytes);
  for (Entry& e : entries) {
    e.scales_offset = at;
    at = align_up(at + e.scales_bytes());
    e.codes_offset = at;
    at = align_up(at + e.codes_bytes());
  }
  return at;
}

std::string header_json(Quant quant, const std::string& key, const std::vector<Entry>& entries) {
  nlohmann::json h;
  h["format"] = "bitdelta-quantized-base";
  h["version"] = kFormatVersion;
  h["quant"] = std::string(quant_name(quant));
  h["key"] = key;
  nlohmann::json list = nlohmann::json::array();
  for (const Entry& e : entries) {
    list.push_back({{"name", e.name},
                    {"quant", std::string(quant_name(e.quant))},
                    {"rows", e.source.rows},
                    {"cols", e.source.cols},
                    {"scales", e.scales_offset},
                    {"codes", e.codes_offset}});
  }
  h["matrices"] = list;
  return h.dump();
}

// The file's prefix: magic, the header's length (8 bytes LE), the header, zero padding. The
// offsets in the header depend on the header's size, which depends on their digits: the layout
// is computed from a guess of that size and again until the padded size stops changing.
std::string file_prefix(Quant quant, const std::string& key, std::vector<Entry>& entries,
                        uint64_t* total) {
  uint64_t header_bytes = 16;
  for (int pass = 0; pass < 4; ++pass) {
    *total = lay_out(entries, header_bytes);
    const std::string json = header_json(quant, key, entries);
    const uint64_t need = 16 + json.size();
    if (align_up(need) == align_up(header_bytes)) {
      std::string prefix(kMagic, 8);
      const uint64_t n = json.size();
      for (int i = 0; i < 8; ++i) prefix.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
      prefix += json;
      prefix.resize(align_up(prefix.size()), '\0');
      return prefix;
    }
    header_bytes = need;
  }
  fail("quantized base: could not lay out the cache header");
}

// Checks a mapped cache file against the expected entries; empty string when it fits, else what
// is wrong.
std::string check_cache(const MappedFile& map, Quant quant, const std::string& key,
                        std::vector<Entry>& entries) {
  if (map.size() < 16 || std::memcmp(map.data(), kMagic, 8) != 0) return "not a cache file";
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{map.data()[8 + i]} << (8 * i);
  if (n > map.size() - 16) return "truncated header";
  nlohmann::json h = nlohmann::json::parse(map.data() + 16, map.data() + 16 + n, nullptr, false);
  if (h.is_discarded() || !h.is_object()) return "unreadable header";
  if (h.value("format", "") != "bitdelta-quantized-base" ||
      h.value("version", 0) != kFormatVersion || h.value("quant", "") != quant_name(quant) ||
      h.value("key", "") != key) {
    return "made from other weights or by another version";
  }
  const auto& list = h["matrices"];
  if (!list.is_array() || list.size() != entries.size()) return "other matrices";
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& e = entries[i];
    const auto& m = list[i];
    if (!m.is_object() || m.value("name", "") != e.name ||
        m.value("quant", "") != quant_name(e.quant) ||
        m.value("rows", int64_t{-1}) != e.source.rows ||
        m.value("cols", int64_t{-1}) != e.source.cols) {
      return fmt::format("matrix {} differs", e.name);
    }
    e.scales_offset = m.value("scales", uint64_t{0});
    e.codes_offset = m.value("codes", uint64_t{0});
    if (e.scales_offset % kAlign != 0 || e.codes_offset % kAlign != 0 ||
        e.scales_offset > map.size() || e.scales_bytes() > map.size() - e.scales_offset ||
        e.codes_offset > map.size() || e.codes_bytes() > map.size() - e.codes_offset) {
      return fmt::format("matrix {} lies outside the file", e.name);
    }
  }
  return {};
}

void point_views(std::vector<Entry>& entries, const uint8_t* base) {
  for (Entry& e : entries) {
    WeightMatrix m = e.source;
    m.quant = e.quant;
    m.scales = reinterpret_cast<const uint16_t*>(base + e.scales_offset);
    m.data = base + e.codes_offset;
    *e.view = m;
  }
}

void quantize_into(const Entry& e, uint8_t* scales, uint8_t* codes, ThreadPool& pool) {
  quantize_matrix(e.quant, e.source.dtype, e.source.data, e.source.rows, e.source.cols,
                  reinterpret_cast<uint16_t*>(scales), codes, pool);
  release_pages(e.source);
}

}  // namespace

std::unique_ptr<QuantizedBase> QuantizedBase::attach(const WeightFiles& files,
                                                     ModelWeights& weights,
                                                     const QuantOptions& options,
                                                     ThreadPool& pool) {
  BD_CHECK(options.quant != Quant::kNone);
  auto out = std::unique_ptr<QuantizedBase>(new QuantizedBase());
  out->quant_ = options.quant;
  std::vector<Entry> entries = entries_of(weights, options.quant);
  for (const Entry& e : entries) {
    if (!is_float_weight(e.source.dtype) || e.source.quant != Quant::kNone) {
      fail("cannot quantize {}: its weights are {} (F32, F16 or BF16 needed)", e.name,
           dtype_name(e.source.dtype));
    }
  }
  out->key_ = cache_key(options.quant, entries);
  uint64_t total = 0;

  const fs::path dir =
      options.cache_dir.empty() ? files.dir() / ".bitdelta-cache" : options.cache_dir;
  const std::string stem = fmt::format("{}-{}", quant_name(options.quant), out->key_.substr(9));
  const fs::path path = dir / (stem + ".bdq");
  if (options.use_cache && fs::exists(path)) {
    try {
      MappedFile map = MappedFile::open(path);
      const std::string problem = check_cache(map, options.quant, out->key_, entries);
      if (problem.empty()) {
        point_views(entries, map.data());
        out->map_ = std::move(map);
        out->cache_file_ = path;
        out->from_cache_ = true;
        return out;
      }
      spdlog::warn("quantized-base cache {} is unusable ({}); quantizing again", path.string(),
                   problem);
    } catch (const Error& e) {
      spdlog::warn("quantized-base cache {}: {}; quantizing again", path.string(), e.what());
    }
  }

  const std::string prefix = file_prefix(options.quant, out->key_, entries, &total);
  const auto report = [&](int64_t done) {
    if (options.progress) options.progress(done, static_cast<int64_t>(entries.size()));
  };
  if (options.use_cache) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    try {
      if (ec) fail("cannot create {}: {}", dir.string(), ec.message());
      AtomicFile file(path);
      file.write(std::string_view(prefix));
      std::vector<uint8_t> scratch;
      int64_t done = 0;
      for (const Entry& e : entries) {
        // Zero padding up to each part's offset, then its bytes.
        scratch.assign(e.codes_offset - e.scales_offset + e.codes_bytes(), 0);
        quantize_into(e, scratch.data(), scratch.data() + (e.codes_offset - e.scales_offset), pool);
        const uint64_t pad = e.scales_offset - file.bytes_written();
        if (pad > 0) file.write(std::string(pad, '\0'));
        file.write(std::span<const uint8_t>(scratch));
        report(++done);
      }
      if (file.bytes_written() < total) file.write(std::string(total - file.bytes_written(), '\0'));
      file.commit();
      // Older caches of this format in the folder were made from other weights.
      for (const auto& f : fs::directory_iterator(dir, ec)) {
        const std::string name = f.path().filename().string();
        if (f.path() != path && name.starts_with(std::string(quant_name(options.quant)) + "-") &&
            name.ends_with(".bdq")) {
          fs::remove(f.path(), ec);
        }
      }
      MappedFile map = MappedFile::open(path);
      const std::string problem = check_cache(map, options.quant, out->key_, entries);
      BD_CHECK(problem.empty(), "quantized-base cache just written is unusable: {}", problem);
      point_views(entries, map.data());
      out->map_ = std::move(map);
      out->cache_file_ = path;
      return out;
    } catch (const Error& e) {
      spdlog::warn("cannot cache the quantized base in {} ({}); keeping it in memory only",
                   dir.string(), e.what());
    }
  }
  out->memory_.assign(total, 0);
  int64_t done = 0;
  for (const Entry& e : entries) {
    quantize_into(e, out->memory_.data() + e.scales_offset, out->memory_.data() + e.codes_offset,
                  pool);
    report(++done);
  }
  point_views(entries, out->memory_.data());
  return out;
}

}  // namespace bitdelta
