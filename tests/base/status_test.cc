#include "base/status.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "base/file.h"

namespace dcomp {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x));
  return Status::Ok();
}

TEST(StatusTest, CodesEqualGrpcNumbers) {
  EXPECT_EQ(static_cast<int>(StatusCode::kInvalidArgument), 3);
  EXPECT_EQ(static_cast<int>(StatusCode::kResourceExhausted), 8);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnavailable), 14);
  EXPECT_EQ(static_cast<int>(StatusCode::kDataLoss), 15);
}

TEST(StatusTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "odd: 3");
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).ToString(), "INVALID_ARGUMENT: odd: 5");
}

TEST(StatusTest, WithContextPrefixes) {
  EXPECT_EQ(DataLossError("bad crc").WithContext("block 3").message(), "block 3: bad crc");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(StatusTest, ErrnoMapping) {
  EXPECT_EQ(ErrnoToStatus(ENOENT, "open x").code(), StatusCode::kNotFound);
  EXPECT_EQ(ErrnoToStatus(EACCES, "open x").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoToStatus(EIO, "read x").code(), StatusCode::kDataLoss);
  EXPECT_NE(ErrnoToStatus(ENOENT, "open /nope").message().find("open /nope"), std::string::npos);
}

TEST(FileTest, MissingFileAndDirectoryAreClearErrors) {
  auto r = MappedFile::Open("/nonexistent/dcomp/file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/dcomp/file"), std::string::npos);
  auto d = MappedFile::Open("/tmp");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
}

TEST(FileTest, WriteAtomicallyThenMap) {
  const std::string path =
      ::testing::TempDir() + "/dcomp_file_test_" + std::to_string(getpid()) + ".bin";
  const std::string data = "hello dcomp";
  ASSERT_TRUE(
      WriteFileAtomically(path, std::span<const uint8_t>(
                                    reinterpret_cast<const uint8_t*>(data.data()), data.size()))
          .ok());
  auto m = MappedFile::Open(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*m)->data()), (*m)->size()), data);
  EXPECT_EQ(*ReadFileToString(path), data);
}

}  // namespace
}  // namespace dcomp
