// Does registering the staging buffers with io_uring (fixed buffers: pages pinned once, not per
// read) pay for itself? Reads a file in unit-sized pieces the way the prefetcher does (O_DIRECT,
// 1 MiB chunks, 16 in flight, into one staging-sized buffer), with plain and with fixed-buffer
// reads, alternated, and prints throughput and the process's CPU time per GB read.
//
//   read_bench FILE [unit_mib=34] [passes=3] [rounds=2]
//   read_bench FILE --timeline MIB   # MIB MiB in 1 MiB reads one after another (as the runtime's
//                                    # start-up probe reads), milliseconds after every MIB/16
//                                    # MiB: shows a token-bucket device's burst, then its rate
#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr size_t kChunk = 1u << 20;
constexpr unsigned kDepth = 16;

double Seconds(const timeval& a, const timeval& b) {
  return static_cast<double>(b.tv_sec - a.tv_sec) +
         static_cast<double>(b.tv_usec - a.tv_usec) * 1e-6;
}

// Reads [0, file size) unit by unit into `buf`, `passes` times; false on an I/O error.
bool ReadAll(io_uring* ring, int fd, uint64_t file_size, uint8_t* buf, size_t unit, int passes,
             bool fixed, uint64_t* bytes) {
  for (int p = 0; p < passes; ++p) {
    for (uint64_t base = 0; base + unit <= file_size; base += unit) {
      const size_t n = unit / kChunk;
      size_t next = 0, done = 0;
      unsigned in_flight = 0;
      while (done < n) {
        while (in_flight < kDepth && next < n) {
          io_uring_sqe* sqe = io_uring_get_sqe(ring);
          const uint64_t off = base + next * kChunk;
          if (fixed) {
            io_uring_prep_read_fixed(sqe, fd, buf + next * kChunk, kChunk, off, 0);
          } else {
            io_uring_prep_read(sqe, fd, buf + next * kChunk, kChunk, off);
          }
          ++next;
          ++in_flight;
        }
        if (io_uring_submit_and_wait(ring, 1) < 0) return false;
        io_uring_cqe* cqe = nullptr;
        while (io_uring_peek_cqe(ring, &cqe) == 0) {
          const int res = cqe->res;
          io_uring_cqe_seen(ring, cqe);
          if (res != static_cast<int>(kChunk)) {
            std::fprintf(stderr, "read: %s\n", res < 0 ? std::strerror(-res) : "short read");
            return false;
          }
          --in_flight;
          ++done;
        }
      }
      *bytes += unit;
    }
  }
  return true;
}

// 1 MiB reads one after another from offset 0, timed.
int Timeline(const char* path, size_t mib) {
  const int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    std::perror(path);
    return 1;
  }
  void* buf = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  const size_t step = std::max<size_t>(1, mib / 16);
  std::printf("# %s: %zu MiB in 1 MiB O_DIRECT reads, one at a time\n%10s %10s %12s\n", path, mib,
              "MiB", "ms", "MB/s since");
  const auto t0 = std::chrono::steady_clock::now();
  double last_ms = 0;
  for (size_t i = 0; i < mib; ++i) {
    const ssize_t n = pread(fd, buf, kChunk, static_cast<off_t>(i * kChunk));
    if (n != static_cast<ssize_t>(kChunk)) {
      std::fprintf(stderr, "%s: read at %zu MiB: %s\n", path, i,
                   n < 0 ? std::strerror(errno) : "short read (file too small?)");
      return 1;
    }
    if ((i + 1) % step == 0) {
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%10zu %10.1f %12.0f\n", i + 1, ms,
                  static_cast<double>(step * kChunk) / 1e3 / std::max(ms - last_ms, 1e-3));
      last_ms = ms;
    }
  }
  munmap(buf, kChunk);
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: read_bench FILE [unit_mib=34] [passes=3] [rounds=2]\n"
                 "       read_bench FILE --timeline MIB\n");
    return 2;
  }
  if (argc > 3 && std::strcmp(argv[2], "--timeline") == 0) {
    return Timeline(argv[1], static_cast<size_t>(std::atoi(argv[3])));
  }
  const size_t unit = static_cast<size_t>(argc > 2 ? std::atoi(argv[2]) : 34) << 20;
  const int passes = argc > 3 ? std::atoi(argv[3]) : 3;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 2;
  const int fd = open(argv[1], O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    std::perror(argv[1]);
    return 1;
  }
  const off_t size = lseek(fd, 0, SEEK_END);
  if (size < static_cast<off_t>(unit) || unit == 0) {
    std::fprintf(stderr, "%s: smaller than one unit\n", argv[1]);
    return 1;
  }
  void* mem = mmap(nullptr, unit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* buf = static_cast<uint8_t*>(mem);
  std::memset(buf, 0, unit);
  io_uring ring{};
  if (int rc = io_uring_queue_init(kDepth, &ring, 0); rc < 0) {
    std::fprintf(stderr, "io_uring_queue_init: %s\n", std::strerror(-rc));
    return 1;
  }
  iovec iov{buf, unit};
  if (int rc = io_uring_register_buffers(&ring, &iov, 1); rc < 0) {
    std::fprintf(stderr, "io_uring_register_buffers: %s\n", std::strerror(-rc));
    return 1;
  }
  std::printf("# %s, %zu MiB units, %d passes, O_DIRECT, %zu KiB reads, %u in flight\n", argv[1],
              unit >> 20, passes, kChunk >> 10, kDepth);
  std::printf("%-8s %8s %12s %12s\n", "reads", "GB/s", "sys s/GB", "user s/GB");
  for (int r = 0; r < rounds; ++r) {
    for (bool fixed : {false, true}) {
      rusage r0{}, r1{};
      getrusage(RUSAGE_SELF, &r0);
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t bytes = 0;
      if (!ReadAll(&ring, fd, static_cast<uint64_t>(size), buf, unit, passes, fixed, &bytes)) {
        return 1;
      }
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      getrusage(RUSAGE_SELF, &r1);
      const double gb = static_cast<double>(bytes) / 1e9;
      std::printf("%-8s %8.2f %12.4f %12.4f\n", fixed ? "fixed" : "plain", gb / secs,
                  Seconds(r0.ru_stime, r1.ru_stime) / gb, Seconds(r0.ru_utime, r1.ru_utime) / gb);
    }
  }
  io_uring_queue_exit(&ring);
  munmap(mem, unit);
  close(fd);
  return 0;
}
