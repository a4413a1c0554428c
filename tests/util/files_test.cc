#include "util/files.h"

#include <gtest/gtest.h>

#include "support/test_support.h"
#include "util/error.h"
#include "util/mapped_file.h"
#include "util/sha256.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

size_t count_entries(const std::filesystem::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFile, ReplacesTargetOnlyOnCommit) {
  ScratchDir dir;
  write_file_atomic(dir / "f.txt", "old");
  {
    AtomicFile f(dir / "f.txt");
    f.write(std::string_view("new contents"));
    EXPECT_EQ(read_file(dir / "f.txt"), "old");  // not visible before commit
    // Destroyed without commit: the target keeps its old contents, the temp file is gone.
  }
  EXPECT_EQ(read_file(dir / "f.txt"), "old");
  EXPECT_EQ(count_entries(dir.path()), 1u);
  write_file_atomic(dir / "f.txt", "new");
  EXPECT_EQ(read_file(dir / "f.txt"), "new");
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, ExplainsMissingFolder) {
  ScratchDir dir;
  try {
    write_file_atomic(dir / "nope" / "f.txt", "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos) << e.what();
  }
}

TEST(MappedFile, MapsAndExplainsErrors) {
  ScratchDir dir;
  write_file_atomic(dir / "f", "hello");
  auto m = MappedFile::open(dir / "f");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "hello");
  auto empty_path = dir / "empty";
  write_file_atomic(empty_path, "");
  EXPECT_EQ(MappedFile::open(empty_path).size(), 0u);
  EXPECT_THROW(MappedFile::open(dir / "missing"), Error);
  EXPECT_THROW(MappedFile::open(dir.path()), Error);  // a folder
}

TEST(Sha256, MatchesKnownVectors) {
  EXPECT_EQ(sha256_hex({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.update(std::string_view("ab"));
  h.update(std::string_view("c"));
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace bitdelta
