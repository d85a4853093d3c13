// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with clang's thread-safety
// attributes, so that `-Wthread-safety` checks that state marked GUARDED_BY(mu) is touched only
// with `mu` held and that functions marked REQUIRES(mu) are called with it. The macros expand to
// nothing on compilers without the analysis (GCC), where the classes are plain wrappers.
//
// Usage: `Mutex mu_; int n_ GUARDED_BY(mu_);`, `MutexLock l(&mu_);`, `cv_.Wait(&mu_, pred)` with
// mu_ held. Thread-safe as the std types they wrap.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define DCOMP_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define DCOMP_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) DCOMP_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY DCOMP_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) DCOMP_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) DCOMP_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) DCOMP_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) DCOMP_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) DCOMP_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) DCOMP_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) DCOMP_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) DCOMP_THREAD_ANNOTATION(assert_capability(x))
#define NO_THREAD_SAFETY_ANALYSIS DCOMP_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace dcomp {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  bool TryLock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis that the caller holds the lock (where it cannot see it, e.g. in a lambda
  // run under the lock).
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope; Unlock()/Lock() let a scope drop it around slow work.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  void Unlock() RELEASE() {
    mu_->Unlock();
    held_ = false;
  }
  void Lock() ACQUIRE() {
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* mu_;
  bool held_ = true;
};

// A condition variable waited on with a Mutex held.
class CondVar {
 public:
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }
  // Waits until pred() (evaluated with mu held) is true. mu must be held.
  template <typename Pred>
  void Wait(Mutex* mu, Pred pred) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    cv_.wait(l, pred);
    l.release();
  }
  // As Wait, for at most `timeout`; returns pred().
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout, Pred pred) REQUIRES(mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    const bool r = cv_.wait_for(l, timeout, pred);
    l.release();
    return r;
  }

 private:
  std::condition_variable cv_;
};

}  // namespace dcomp
