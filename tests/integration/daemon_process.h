// Starts the real dcompd binary for integration tests: its own temp directory, a unix socket in it,
// optional extra arguments and environment, stdout+stderr captured to a log file; stops it with a
// signal and reports how it exited and how long it took.
#pragma once

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proto/dcomp.grpc.pb.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "tests/util/test_paths.h"

extern char** environ;

namespace dcomp::testing {

inline std::string DcompdBinary() { return BinaryDir() + "/daemon/dcompd"; }
inline std::string DcompctlBinary() { return BinaryDir() + "/client/dcompctl"; }
inline std::string DcompBinary() { return BinaryDir() + "/packer/dcomp"; }

// A fresh directory under /tmp (unix socket paths must stay under 108 bytes).
inline std::string MakeTempDir(const std::string& tag) {
  std::string tmpl = "/tmp/dcomp-it-" + tag + "-XXXXXX";
  char* p = mkdtemp(tmpl.data());
  return p ? std::string(p) : std::string();
}

class DaemonProcess {
 public:
  // `args` follow --listen unix:DIR/dcompd.sock; `env` entries ("K=V") are added to ours.
  DaemonProcess(std::vector<std::string> args, std::vector<std::string> env = {})
      : dir_(MakeTempDir("d")), address_("unix:" + dir_ + "/dcompd.sock") {
    std::vector<std::string> argv = {DcompdBinary(), "--listen", address_};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string s(*e);
      if (s.rfind("NOTIFY_SOCKET=", 0) == 0 || s.rfind("WATCHDOG_", 0) == 0 ||
          s.rfind("JOURNAL_STREAM=", 0) == 0) {
        continue;
      }
      envs.push_back(s);
    }
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> cenv;
    for (auto& e : envs) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    log_ = dir_ + "/dcompd.log";
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    // The socket appears only once dcompd listens: retry connecting quickly, not with gRPC's
    // default 1 s+ backoff.
    grpc::ChannelArguments ca;
    ca.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10);
    ca.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 10);
    ca.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), ca);
  }

  ~DaemonProcess() {
    if (pid_ > 0 && !exited_ && Stop(SIGTERM, std::chrono::seconds(15)) < 0) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Health of "" (UNKNOWN when the call fails, e.g. before the socket exists).
  grpc::health::v1::HealthCheckResponse::ServingStatus Health() const {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse resp;
    if (!stub->Check(&ctx, {}, &resp).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    return resp.status();
  }

  // Polls health until SERVING; false after `timeout` or when the process exits.
  bool WaitServing(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    const std::string sock = address_.substr(5);
    while (!std::filesystem::exists(sock) && std::chrono::steady_clock::now() < end) {
      if (Exited(nullptr)) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    while (std::chrono::steady_clock::now() < end) {
      if (Health() == grpc::health::v1::HealthCheckResponse::SERVING) return true;
      if (Exited(nullptr)) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // True once the process has exited (status in *code: exit code, or 128 + signal).
  bool Exited(int* code) {
    if (exited_) {
      if (code) *code = code_;
      return true;
    }
    int st;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      exited_ = true;
      code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      if (code) *code = code_;
      return true;
    }
    return false;
  }

  // Sends `sig` and waits up to `timeout`; returns the exit code (-1: still running) and the time
  // it took in *seconds.
  int Stop(int sig, std::chrono::seconds timeout, double* seconds = nullptr) {
    const auto t0 = std::chrono::steady_clock::now();
    kill(pid_, sig);
    int code = -1;
    while (std::chrono::steady_clock::now() - t0 < timeout) {
      if (Exited(&code)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (seconds)
      *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return code;
  }

 private:
  std::string dir_, address_, log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace dcomp::testing
