// Real adapters for the store tests: perturbed fine-tunes of stories260K compressed against it,
// plus one compressed against a different base.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "support/test_support.h"

namespace bitdelta::testing {

class StoreAssets {
 public:
  // Builds everything once per process (the fixtures' SetUpTestSuite calls this).
  static const StoreAssets& get() {
    static const StoreAssets assets;
    return assets;
  }
  std::filesystem::path base() const { return dir_ / "base"; }
  // gaming/alice/v1, gaming/alice/v2, education/bob/v1: made for base().
  std::filesystem::path alice_v1() const { return dir_ / "alice_v1.bdelta"; }
  std::filesystem::path alice_v2() const { return dir_ / "alice_v2.bdelta"; }
  std::filesystem::path bob_v1() const { return dir_ / "bob_v1.bdelta"; }
  // gaming/carol/v1: made for another base (a fine-tune of base()).
  std::filesystem::path other_base_adapter() const { return dir_ / "carol_v1.bdelta"; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  StoreAssets() : dir_(scratch_.path()) {
    make_base(base());
    ThreadPool pool(2);
    auto make = [&](const std::filesystem::path& base_dir, uint32_t seed, const char* id,
                    const std::filesystem::path& out) {
      const auto ft = dir_ / ("ft" + std::to_string(seed));
      make_finetune(base(), ft, seed, 0.05f);
      CompressOptions options;
      options.adapter_id = AdapterId::parse(id);
      compress_adapter(base_dir, ft, out, options, pool);
    };
    make(base(), 21, "gaming/alice/v1", alice_v1());
    make(base(), 22, "gaming/alice/v2", alice_v2());
    make(base(), 23, "education/bob/v1", bob_v1());
    make(dir_ / "ft21", 24, "gaming/carol/v1", other_base_adapter());
  }
  ScratchDir scratch_;
  std::filesystem::path dir_;
};

// Every file and folder under `dir`, relative: what "no trace left" is checked against.
inline std::set<std::string> tree(const std::filesystem::path& dir) {
  std::set<std::string> entries;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    entries.insert(std::filesystem::relative(e.path(), dir).string());
  }
  return entries;
}

}  // namespace bitdelta::testing
