#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

// Writes a raw safetensors file from a header text and a data section.
void write_raw(const std::filesystem::path& path, const std::string& header, const std::string& data,
               std::optional<uint64_t> header_len = std::nullopt) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header_len.value_or(header.size());
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>(n >> (8 * i));
  out.write(len, 8);
  out << header << data;
}

// Expects opening `path` to fail with a message containing `needle` (and the file name).
void expect_open_error(const std::filesystem::path& path, const std::string& needle) {
  try {
    SafetensorsFile::open(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.filename().string()), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ReadsReferenceFileWrittenFromTheSpec) {
  auto st = SafetensorsFile::open(testing::test_data("io/reference.safetensors"));
  EXPECT_EQ(st.metadata().at("note"), "reference fixture");
  ASSERT_EQ(st.tensors().size(), 6u);

  auto a = st.view("a.f32");
  EXPECT_EQ(a.dtype(), DType::kF32);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.to_f32(), (std::vector<float>{1.5f, -2.25f, 3.0e-3f, 1.0e30f, -0.0f, 7.0f}));

  auto b = st.view("b.f16").to_f32();
  EXPECT_EQ(b, (std::vector<float>{1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f}));
  EXPECT_EQ(st.view("c.bf16").to_f32(), (std::vector<float>{1.0f, -3.5f, 0.15625f, 256.0f}));

  auto u8 = st.view("d.u8");
  EXPECT_EQ(u8.dtype(), DType::kU8);
  EXPECT_EQ(std::vector<uint8_t>(u8.bytes().begin(), u8.bytes().end()),
            (std::vector<uint8_t>{0, 1, 128, 255}));
  auto i8 = st.view("e.i8");
  EXPECT_EQ(static_cast<int8_t>(i8.data[0]), -128);
  EXPECT_EQ(static_cast<int8_t>(i8.data[2]), 127);
  EXPECT_EQ(st.view("f.empty").numel(), 0);
  EXPECT_THROW(st.view("missing"), Error);
}

TEST(Safetensors, WriterRoundTripsDataAndMetadata) {
  ScratchDir dir;
  std::vector<float> values = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> bits = {0xff, 0x01, 0x80};
  SafetensorsWriter writer;
  writer.set_metadata("format", "bitdelta");
  writer.add_f32("w", {2, 3}, values);
  writer.add("bits", DType::kU8, {3}, bits);
  writer.write(dir / "x.safetensors");

  auto st = SafetensorsFile::open(dir / "x.safetensors");
  EXPECT_EQ(st.metadata().at("format"), "bitdelta");
  EXPECT_EQ(st.view("w").to_f32(), values);
  auto v = st.view("bits");
  EXPECT_EQ(std::vector<uint8_t>(v.bytes().begin(), v.bytes().end()), bits);
  EXPECT_EQ(st.data_offset() % 8, 0u) << "data section should start 8-byte aligned";
  // No temporary files are left behind.
  size_t files = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1u);
}

TEST(Safetensors, ViewsPointIntoTheMappingWithoutCopies) {
  auto st = SafetensorsFile::open(testing::test_data("io/reference.safetensors"));
  auto a = st.view("a.f32");
  auto b = st.view("a.f32");
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(a.data, nullptr == a.data ? nullptr : a.data);
  float first;
  std::memcpy(&first, a.data, 4);
  EXPECT_EQ(first, 1.5f);
}

TEST(Safetensors, RejectsTooShortFile) {
  ScratchDir dir;
  testing::write_text(dir / "short.safetensors", "abc");
  expect_open_error(dir / "short.safetensors", "too short");
}

TEST(Safetensors, RejectsTruncatedFile) {
  ScratchDir dir;
  std::string full = testing::read_text(testing::test_data("io/reference.safetensors"));
  testing::write_text(dir / "trunc.safetensors", full.substr(0, full.size() - 10));
  expect_open_error(dir / "trunc.safetensors", "past the end");
  testing::write_text(dir / "trunc2.safetensors", full.substr(0, 100));
  expect_open_error(dir / "trunc2.safetensors", "truncated");
}

TEST(Safetensors, RejectsAbsurdHeaderLength) {
  ScratchDir dir;
  write_raw(dir / "huge.safetensors", "{}", "", uint64_t{1} << 62);
  expect_open_error(dir / "huge.safetensors", "absurd");
}

TEST(Safetensors, RejectsBadJson) {
  ScratchDir dir;
  write_raw(dir / "bad.safetensors", "{\"a\": {\"dtype\": ", "");
  expect_open_error(dir / "bad.safetensors", "not valid JSON");
  write_raw(dir / "array.safetensors", "[1, 2]", "");
  expect_open_error(dir / "array.safetensors", "must be a JSON object");
}

TEST(Safetensors, RejectsBadOffsets) {
  ScratchDir dir;
  write_raw(dir / "past.safetensors",
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", "1234");
  expect_open_error(dir / "past.safetensors", "past the end");
  write_raw(dir / "reversed.safetensors",
            R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", "1234");
  expect_open_error(dir / "reversed.safetensors", "begin after end");
  write_raw(dir / "overlap.safetensors",
            R"({"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
            "1234");
  expect_open_error(dir / "overlap.safetensors", "overlap");
  write_raw(dir / "negative.safetensors",
            R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [-1, 3]}})", "1234");
  expect_open_error(dir / "negative.safetensors", "data_offsets");
}

TEST(Safetensors, RejectsWrongDtypeSize) {
  ScratchDir dir;
  write_raw(dir / "size.safetensors",
            R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "12345678");
  expect_open_error(dir / "size.safetensors", "needs 12 bytes");
  write_raw(dir / "overflow.safetensors",
            R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
            "12345678");
  expect_open_error(dir / "overflow.safetensors", "absurd shape");
  write_raw(dir / "dtype.safetensors",
            R"({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", "1");
  expect_open_error(dir / "dtype.safetensors", "unsupported dtype");
}

TEST(Safetensors, RejectsDuplicateNamesAndBadMetadata) {
  ScratchDir dir;
  write_raw(dir / "dup.safetensors",
            R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
            "12");
  expect_open_error(dir / "dup.safetensors", "appears twice");
  write_raw(dir / "meta.safetensors", R"({"__metadata__": {"n": 3}})", "");
  expect_open_error(dir / "meta.safetensors", "must be a string");
}

TEST(Safetensors, RejectsMissingFields) {
  ScratchDir dir;
  write_raw(dir / "noshape.safetensors", R"({"a": {"dtype": "U8", "data_offsets": [0, 1]}})", "1");
  expect_open_error(dir / "noshape.safetensors", "no shape");
  write_raw(dir / "nodtype.safetensors", R"({"a": {"shape": [1], "data_offsets": [0, 1]}})", "1");
  expect_open_error(dir / "nodtype.safetensors", "no dtype");
}

// Every single-byte corruption of the header and every truncation either opens cleanly or gives
// an Error: never a crash (run under ASan in the sanitizer build).
TEST(Safetensors, SurvivesEveryTruncationAndHeaderByteFlip) {
  ScratchDir dir;
  const std::string full = testing::read_text(testing::test_data("io/reference.safetensors"));
  const auto path = dir / "f.safetensors";
  for (size_t n = 0; n < full.size(); n += 7) {
    testing::write_text(path, full.substr(0, n));
    EXPECT_THROW(SafetensorsFile::open(path), Error) << "truncated to " << n;
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, full.data(), 8);
  for (size_t i = 0; i < 8 + header_len; ++i) {
    for (unsigned char flip : {0x01, 0x20, 0x80}) {
      std::string corrupt = full;
      corrupt[i] = static_cast<char>(corrupt[i] ^ flip);
      testing::write_text(path, corrupt);
      try {
        auto st = SafetensorsFile::open(path);
        for (const auto& t : st.tensors()) (void)st.view(t).bytes();
      } catch (const Error&) {
      }
    }
  }
}

TEST(Safetensors, FailedWriteLeavesNoFile) {
  ScratchDir dir;
  SafetensorsWriter writer;
  std::vector<float> v = {1};
  writer.add_f32("x", {1}, v);
  EXPECT_THROW(writer.write(dir / "missing-folder" / "x.safetensors"), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "missing-folder"));
}

}  // namespace
}  // namespace bitdelta
