// Unit tests of the service's parts that need no running daemon: config reading and validation,
// listen addresses, request validation, the cgroup limit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "daemon/config.h"
#include "daemon/validate.h"
#include "engine/model_file.h"
#include "runtime/memory_stats.h"
#include "tests/util/test_paths.h"

namespace dcomp::server {
namespace {

std::string TempPath(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("dcomp-server-test-" + std::to_string(getpid()) + "-" + name);
}

TEST(ConfigTest, TheExampleConfigIsValid) {
  auto c = ReadDaemonConfig(testing::SourceDir() + "/configs/dcompd.textproto");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ApplyDefaults(&*c);
  EXPECT_TRUE(ValidateDaemonConfig(*c, "example").ok());
  EXPECT_EQ(c->budget(), "600MiB");
  EXPECT_EQ(c->listen(0), kDefaultListen);
}

TEST(ConfigTest, ParseErrorsNameFileLineAndColumn) {
  const std::string p = TempPath("bad.textproto");
  std::ofstream(p) << "model: \"m\"\n  queue_depth: \"eight\"\n";
  auto c = ReadDaemonConfig(p);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(p + ":2:16"), std::string::npos) << c.status().message();
  std::filesystem::remove(p);
  EXPECT_EQ(ReadDaemonConfig("/no/such.textproto").status().code(), StatusCode::kNotFound);
}

TEST(ConfigTest, DefaultsAndFieldErrors) {
  v1::DaemonConfig c;
  c.set_model("m.dcm");
  ApplyDefaults(&c);
  EXPECT_EQ(c.queue_depth(), kDefaultQueueDepth);
  EXPECT_EQ(c.limits().max_tokens(), kDefaultMaxTokens);
  EXPECT_EQ(c.unix_socket_mode(), 0660u);
  ASSERT_TRUE(ValidateDaemonConfig(c, "f").ok());
  const auto err = [&](auto mutate) {
    v1::DaemonConfig x = c;
    mutate(x);
    return ValidateDaemonConfig(x, "f").message();
  };
  EXPECT_EQ(err([](auto& x) { x.set_model(""); }).rfind("f: field `model`: required", 0), 0u);
  EXPECT_NE(err([](auto& x) { x.set_queue_depth(0); }).find("queue_depth`: expected 1..1024"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.set_budget("12 parsecs"); }).find("field `budget`"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.set_policy("fast"); }).find("field `policy`"), std::string::npos);
  EXPECT_NE(err([](auto& x) { x.add_listen("10.0.0.1:50051"); }).find("not a loopback"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.add_listen(kDefaultListen); }).find("twice"), std::string::npos);
  EXPECT_NE(err([](auto& x) {
              x.mutable_limits()->set_max_message_bytes(2000);
            }).find("limits.max_message_bytes"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.set_chat_template("alpaca"); }).find("field `chat_template`"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.set_http_listen("10.0.0.1:8080"); }).find("`http_listen`"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) { x.set_http_listen("unix:/tmp/h.sock"); }).find("HOST:PORT"),
            std::string::npos);
  EXPECT_NE(err([](auto& x) {
              x.add_listen("127.0.0.1:8080");
              x.set_http_listen("127.0.0.1:8080");
            }).find("also a gRPC `listen` address"),
            std::string::npos);
  v1::DaemonConfig remote = c;
  remote.add_listen("0.0.0.0:50051");
  remote.set_http_listen("0.0.0.0:8080");
  remote.set_chat_template("chatml");
  remote.set_allow_remote(true);
  EXPECT_TRUE(ValidateDaemonConfig(remote, "f").ok());
}

TEST(ConfigTest, ListenAddresses) {
  auto u = ParseListenAddress("unix:/run/dcompd/dcompd.sock");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->is_unix);
  EXPECT_EQ(u->path, "/run/dcompd/dcompd.sock");
  auto t = ParseListenAddress("127.0.0.1:50051");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->port, 50051);
  EXPECT_TRUE(t->loopback);
  auto v6 = ParseListenAddress("[::1]:7");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(v6->loopback);
  EXPECT_TRUE(ParseListenAddress("localhost:1").ok());
  EXPECT_FALSE(ParseListenAddress("192.168.1.2:80")->loopback);
  for (const char* bad : {"unix:relative", "unix:", "127.0.0.1", "127.0.0.1:99999", ":80", "::1:80",
                          "example.com:80", "127.0.0.1:x"}) {
    EXPECT_FALSE(ParseListenAddress(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseListenAddress("unix:/" + std::string(120, 'a')).ok());
}

// Unknown fields are accepted (tests/integration: UnknownFieldsAreAccepted) and described for the
// debug log by number and path.
TEST(ValidateTest, UnknownFieldsAreNamedByNumberAndPath) {
  v1::GenerateRequest r;
  r.set_prompt("x");
  EXPECT_EQ(DescribeUnknownFields(r, "request"), "");
  r.mutable_sampling()
      ->GetReflection()
      ->MutableUnknownFields(r.mutable_sampling())
      ->AddVarint(9, 1);
  r.GetReflection()->MutableUnknownFields(&r)->AddVarint(99, 1);
  EXPECT_EQ(DescribeUnknownFields(r, "request"),
            "request: unknown field number 99 (not part of dcomp.v1.GenerateRequest); "
            "request.sampling: unknown field number 9 (not part of dcomp.v1.Sampling)");
}

TEST(ValidateTest, TokenizeText) {
  v1::RequestLimits l;
  l.set_max_prompt_bytes(8);
  v1::TokenizeRequest r;
  EXPECT_TRUE(ValidateTokenizeRequest(r, l).ok());  // empty text is fine to tokenize
  r.set_text("123456789");
  EXPECT_NE(ValidateTokenizeRequest(r, l).message().find("text: 9 bytes; the limit is 8"),
            std::string::npos);
  r.set_text("a\xC3");
  EXPECT_NE(ValidateTokenizeRequest(r, l).message().find("invalid UTF-8 at byte 1"),
            std::string::npos);
}

TEST(CgroupTest, ReadsV1AndV2Limits) {
  const std::string root = TempPath("cg");
  std::filesystem::create_directories(root + "/svc");
  std::filesystem::create_directories(root + "/memory/box");
  std::ofstream(root + "/svc/memory.max") << "max\n";
  std::ofstream(root + "/memory/box/memory.limit_in_bytes") << "629145600\n";
  std::ofstream(root + "/cgroup") << "12:cpu,cpuacct:/x\n5:memory:/box\n0::/svc\n";
  EXPECT_EQ(runtime::CgroupMemoryLimit(root + "/cgroup", root), 629145600u);
  std::ofstream(root + "/svc/memory.max") << "536870912\n";
  EXPECT_EQ(runtime::CgroupMemoryLimit(root + "/cgroup", root), 536870912u);
  std::ofstream(root + "/cgroup") << "0::/none\n";
  EXPECT_EQ(runtime::CgroupMemoryLimit(root + "/cgroup", root), 0u);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace dcomp::server
