// The embedded adapter store with real adapters: round trips, immutability, refusal of bad bytes
// and wrong bases without a trace, blob sharing, persistence, concurrency, and ids that must
// never turn into paths.
#include "store/adapter_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "delta/adapter.h"
#include "store/store_test_util.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;
using testing::StoreAssets;
using testing::tree;

std::string sha256_of(const std::filesystem::path& file) {
  const std::string bytes = read_file(file);
  return sha256_hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

AdapterId id(const char* text) { return AdapterId::parse(text, /*allow_latest=*/true); }

// Runs `f`, expecting an Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

size_t blob_count(const AdapterStore& store) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(store.dir() / "blobs")) {
    n += e.is_regular_file() ? 1 : 0;
  }
  return n;
}

class Store : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StoreAssets::get(); }
  const StoreAssets& assets_ = StoreAssets::get();
  ScratchDir scratch_;
};

TEST_F(Store, AddFindListLatestRemoveRoundTrip) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  EXPECT_TRUE(store.list().empty());

  const AdapterRecord v1 = store.add(assets_.alice_v1());
  EXPECT_EQ(v1.id, id("gaming/alice/v1"));
  EXPECT_EQ(v1.sha256, sha256_of(assets_.alice_v1()));
  EXPECT_EQ(v1.file_bytes, std::filesystem::file_size(assets_.alice_v1()));
  auto adapter = Adapter::open(assets_.alice_v1());
  EXPECT_EQ(v1.base_fingerprint, adapter->base_fingerprint());
  EXPECT_EQ(v1.base_model, adapter->metadata().at("base_model"));
  auto meta = nlohmann::json::parse(v1.metadata_json);
  EXPECT_EQ(meta.at("adapter_id"), "gaming/alice/v1");
  EXPECT_EQ(meta.at("format"), "bitdelta");
  EXPECT_TRUE(std::regex_match(v1.created_at,
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << v1.created_at;
  EXPECT_TRUE(v1.latest);
  // The blob holds the file's bytes, under its hash.
  const auto blob = store.blob_path(v1);
  EXPECT_EQ(blob, store.dir() / "blobs" / "sha256" / v1.sha256.substr(0, 2) / v1.sha256);
  EXPECT_EQ(read_file(blob), read_file(assets_.alice_v1()));
  EXPECT_NO_THROW(Adapter::open(blob));

  const AdapterRecord v2 = store.add(assets_.alice_v2());
  EXPECT_TRUE(v2.latest);
  store.add(assets_.bob_v1());

  auto found_v1 = store.find(id("gaming/alice/v1"));
  ASSERT_TRUE(found_v1);
  EXPECT_EQ(found_v1->sha256, v1.sha256);
  EXPECT_EQ(found_v1->metadata_json, v1.metadata_json);
  EXPECT_EQ(found_v1->created_at, v1.created_at);
  EXPECT_FALSE(found_v1->latest);
  auto latest = store.find(id("gaming/alice"));
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->id, id("gaming/alice/v2"));
  EXPECT_TRUE(latest->latest);
  EXPECT_FALSE(store.find(id("gaming/alice/v3")));
  EXPECT_FALSE(store.find(id("gaming/nobody")));

  auto all = store.list();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].id, id("education/bob/v1"));
  EXPECT_TRUE(all[0].latest);
  EXPECT_EQ(all[1].id, id("gaming/alice/v1"));
  EXPECT_FALSE(all[1].latest);
  EXPECT_EQ(all[2].id, id("gaming/alice/v2"));
  EXPECT_TRUE(all[2].latest);
  EXPECT_EQ(store.list("gaming").size(), 2u);
  EXPECT_EQ(store.list(std::nullopt, "bob").size(), 1u);
  EXPECT_EQ(store.list("gaming", "bob").size(), 0u);
  EXPECT_EQ(store.list("education", "bob").size(), 1u);

  // Removing the latest version moves `latest` back.
  EXPECT_TRUE(store.remove(id("gaming/alice/v2")));
  EXPECT_FALSE(std::filesystem::exists(store.blob_path(v2)));
  EXPECT_FALSE(store.find(id("gaming/alice/v2")));
  latest = store.find(id("gaming/alice"));
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->id, id("gaming/alice/v1"));
  EXPECT_TRUE(latest->latest);
  EXPECT_FALSE(store.remove(id("gaming/alice/v2")));
  expect_error([&] { store.remove(id("gaming/alice")); }, "exact version");
  EXPECT_EQ(store.list().size(), 2u);
  EXPECT_TRUE(std::filesystem::is_empty(store.dir() / "tmp"));
}

TEST_F(Store, AddBytesAndExplicitIds) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  const std::string bytes = read_file(assets_.alice_v1());
  const AdapterRecord r = store.add_bytes(bytes, id("support/alice-2/v5"));
  EXPECT_EQ(r.id, id("support/alice-2/v5"));
  EXPECT_EQ(r.sha256, sha256_of(assets_.alice_v1()));
  EXPECT_EQ(r.file_bytes, bytes.size());
  EXPECT_EQ(read_file(store.blob_path(r)), bytes);
  // The record keeps the file's own metadata, whatever id it was registered under.
  EXPECT_EQ(nlohmann::json::parse(r.metadata_json).at("adapter_id"), "gaming/alice/v1");
  expect_error([&] { store.add_bytes(bytes, AdapterId{"support", "alice", 0}); }, "version");
  EXPECT_TRUE(std::filesystem::is_empty(store.dir() / "tmp"));
}

TEST_F(Store, DuplicateIdIsRefused) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  store.add(assets_.alice_v1());
  store.add(assets_.alice_v2());
  const auto before = tree(store.dir());
  expect_error([&] { store.add(assets_.alice_v1()); }, "already in the store");
  // Same id, different bytes: refused too, and the new bytes leave no blob behind.
  expect_error([&] { store.add(assets_.bob_v1(), id("gaming/alice/v1")); }, "gaming/alice/v3");
  EXPECT_EQ(tree(store.dir()), before);
  EXPECT_EQ(store.list().size(), 2u);
  EXPECT_EQ(store.find(id("gaming/alice/v1"))->sha256, sha256_of(assets_.alice_v1()));
}

TEST_F(Store, CorruptedBytesLeaveNoTrace) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  const auto before = tree(store.dir());
  const std::string good = read_file(assets_.alice_v1());

  std::string huge_header = good;
  std::memset(huge_header.data(), 0xff, 8);
  std::string flipped = good;
  flipped[12] = static_cast<char>(flipped[12] ^ 0x5a);  // inside the JSON header
  const auto nan_scale = scratch_ / "nan_scale.bdelta";
  testing::rewrite(assets_.alice_v1(), nan_scale, [](auto&, auto& tensors) {
    for (auto& [name, t] : tensors) {
      if (name.ends_with(".scale")) {
        const float nan = std::nanf("");
        std::memcpy(t.bytes.data(), &nan, sizeof nan);
        return;
      }
    }
  });
  const auto not_bitdelta = scratch_ / "not_bitdelta.bdelta";
  testing::rewrite(assets_.alice_v1(), not_bitdelta,
                   [](auto& meta, auto&) { meta["format"] = "something-else"; });
  const auto bad_fingerprint = scratch_ / "bad_fingerprint.bdelta";
  testing::rewrite(assets_.alice_v1(), bad_fingerprint,
                   [](auto& meta, auto&) { meta["base_fingerprint"] = "../../etc/passwd"; });

  const std::vector<std::pair<std::string, std::string>> uploads = {
      {"", "empty"},
      {"this is not an adapter", "garbage"},
      {good.substr(0, good.size() / 2), "truncated"},
      {huge_header, "huge header"},
      {flipped, "flipped header byte"},
      {read_file(nan_scale), "NaN scale"},
      {read_file(not_bitdelta), "not bitdelta"},
      {read_file(bad_fingerprint), "bad fingerprint"},
  };
  for (const auto& [bytes, what] : uploads) {
    try {
      store.add_bytes(bytes);
      ADD_FAILURE() << what << " was accepted";
    } catch (const Error& e) {
      // Named as an upload, not by the store's temporary file.
      EXPECT_EQ(std::string(e.what()).find("upload-"), std::string::npos)
          << what << ": " << e.what();
    }
    EXPECT_EQ(tree(store.dir()), before) << what;
  }
  expect_error([&] { store.add(nan_scale); }, "finite");
  expect_error([&] { store.add(nan_scale); }, nan_scale.string());
  expect_error([&] { store.add(scratch_ / "missing.bdelta"); }, "missing.bdelta");
  EXPECT_EQ(tree(store.dir()), before);
  EXPECT_TRUE(store.list().empty());
  EXPECT_EQ(blob_count(store), 0u);
}

TEST_F(Store, WrongBaseIsRefusedWithNoTrace) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  const std::string expected = Adapter::open(assets_.alice_v1())->base_fingerprint();
  EXPECT_NO_THROW(store.add(assets_.alice_v1(), {}, expected));
  const auto before = tree(store.dir());
  expect_error([&] { store.add(assets_.other_base_adapter(), {}, expected); }, "was made for base");
  expect_error(
      [&] { store.add_bytes(read_file(assets_.other_base_adapter()), {}, expected); },
      "not for this store's base");
  EXPECT_EQ(tree(store.dir()), before);
  EXPECT_EQ(store.list().size(), 1u);
  // Without an expected base the store takes it: a store may hold adapters for several bases.
  EXPECT_NO_THROW(store.add(assets_.other_base_adapter()));
}

TEST_F(Store, BlobSharedByTwoIdsStaysUntilTheLastGoes) {
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  const AdapterRecord a = store.add(assets_.alice_v1());
  const AdapterRecord b = store.add(assets_.alice_v1(), id("gaming/alice-copy/v1"));
  EXPECT_EQ(a.sha256, b.sha256);
  EXPECT_EQ(store.blob_path(a), store.blob_path(b));
  EXPECT_EQ(blob_count(store), 1u);

  EXPECT_TRUE(store.remove(a.id));
  EXPECT_TRUE(std::filesystem::exists(store.blob_path(b)));
  EXPECT_EQ(read_file(store.blob_path(b)), read_file(assets_.alice_v1()));
  // A failed add of the same bytes must not take the shared blob with it.
  expect_error([&] { store.add(assets_.alice_v1(), b.id); }, "already");
  EXPECT_TRUE(std::filesystem::exists(store.blob_path(b)));

  EXPECT_TRUE(store.remove(b.id));
  EXPECT_FALSE(std::filesystem::exists(store.blob_path(b)));
  EXPECT_EQ(blob_count(store), 0u);
  EXPECT_TRUE(store.list().empty());
}

TEST_F(Store, ReopenPersists) {
  const auto dir = scratch_ / "store";
  AdapterRecord added;
  {
    AdapterStore store = AdapterStore::open(dir);
    added = store.add(assets_.alice_v1());
    store.add(assets_.bob_v1());
  }
  AdapterStore reopened = AdapterStore::open(dir);
  auto found = reopened.find(added.id);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->sha256, added.sha256);
  EXPECT_EQ(found->created_at, added.created_at);
  EXPECT_EQ(found->metadata_json, added.metadata_json);
  EXPECT_EQ(reopened.list().size(), 2u);
  AdapterStore moved = std::move(reopened);
  EXPECT_TRUE(moved.remove(added.id));
  EXPECT_EQ(AdapterStore::open(dir).list().size(), 1u);
}

TEST_F(Store, ConcurrentAddsFromFourThreadsAllLand) {
  const auto dir = scratch_ / "store";
  AdapterStore shared = AdapterStore::open(dir);
  const std::string bytes = read_file(assets_.alice_v1());
  constexpr int kThreads = 4, kEach = 6;
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        // Even threads share one store object; odd ones open their own (another connection,
        // as another process would).
        std::optional<AdapterStore> own;
        if (t % 2 == 1) own = AdapterStore::open(dir);
        AdapterStore& store = own ? *own : shared;
        for (int k = 1; k <= kEach; ++k) {
          const AdapterId adapter_id{"gaming", "thread" + std::to_string(t), k};
          if (k % 2 == 0) {
            store.add_bytes(bytes, adapter_id);
          } else {
            store.add(assets_.bob_v1(), adapter_id);
          }
          if (k == 3) store.remove(adapter_id);
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(errors_mutex);
        errors.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  const auto records = shared.list();
  EXPECT_EQ(records.size(), static_cast<size_t>(kThreads * (kEach - 1)));
  for (int t = 0; t < kThreads; ++t) {
    auto latest = shared.find(AdapterId{"gaming", "thread" + std::to_string(t), 0});
    ASSERT_TRUE(latest);
    EXPECT_EQ(latest->id.version, kEach);
  }
  EXPECT_EQ(blob_count(shared), 2u);
  for (const auto& r : records) EXPECT_TRUE(std::filesystem::exists(shared.blob_path(r)));
  EXPECT_TRUE(std::filesystem::is_empty(dir / "tmp"));
}

TEST_F(Store, PathLikeIdsAreRejected) {
  for (const char* bad : {"gaming/../v1", "gaming/./v1", "gaming/a/b/v1", "gaming//v1",
                          "../alice/v1", "gaming/a\\b/v1", "gaming/alice/v1/", "/gaming/alice/v1",
                          "Gaming/alice/v1", "gaming/alice/v0", "gaming/alice/v-1",
                          "gaming/alice/../../v1", "gaming/al ice/v1"}) {
    EXPECT_THROW(AdapterId::parse(bad, /*allow_latest=*/true), Error) << bad;
  }
  EXPECT_THROW(AdapterId::parse("gaming/alice"), Error);  // a version is required by default
  EXPECT_NO_THROW(AdapterId::parse("education/did:lux:122:0xabc/v3"));

  // Hand-built ids get the same checks in the store.
  AdapterStore store = AdapterStore::open(scratch_ / "store");
  const auto before = tree(store.dir());
  for (const AdapterId& bad : {AdapterId{"gaming", "..", 1}, AdapterId{"gaming", "a/b", 1},
                               AdapterId{"../x", "alice", 1}, AdapterId{"gaming", "", 1}}) {
    expect_error([&] { store.add(assets_.alice_v1(), bad); }, "is invalid");
    expect_error([&] { store.find(bad); }, "is invalid");
    expect_error([&] { store.remove(bad); }, "is invalid");
  }
  EXPECT_EQ(tree(store.dir()), before);
  // Blob paths come only from a SHA-256.
  AdapterRecord forged;
  forged.sha256 = "../../registry.db";
  expect_error([&] { store.blob_path(forged); }, "not a SHA-256");
}

TEST_F(Store, OpenRefusesWhatIsNotAStore) {
  testing::write_text(scratch_ / "file", "x");
  expect_error([&] { AdapterStore::open(scratch_ / "file"); }, "is a file");

  std::filesystem::create_directories(scratch_ / "busy");
  testing::write_text(scratch_ / "busy" / "notes.txt", "mine");
  expect_error([&] { AdapterStore::open(scratch_ / "busy"); }, "no registry.db");
  EXPECT_EQ(tree(scratch_ / "busy"), std::set<std::string>{"notes.txt"});

  std::filesystem::create_directories(scratch_ / "garbled");
  testing::write_text(scratch_ / "garbled" / "registry.db", std::string(4096, 'z'));
  expect_error([&] { AdapterStore::open(scratch_ / "garbled"); }, "not an SQLite database");

  // A registry from a newer bitdelta.
  const auto dir = scratch_ / "newer";
  { AdapterStore::open(dir).add(assets_.alice_v1()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "registry.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  expect_error([&] { AdapterStore::open(dir); }, "upgrade bitdelta");

  // A new folder (nested) and an empty one become stores.
  EXPECT_NO_THROW(AdapterStore::open(scratch_ / "a" / "b"));
  std::filesystem::create_directories(scratch_ / "empty");
  EXPECT_NO_THROW(AdapterStore::open(scratch_ / "empty"));
  EXPECT_TRUE(std::filesystem::exists(scratch_ / "empty" / "registry.db"));
}

}  // namespace
}  // namespace bitdelta
