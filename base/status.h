// Status and Result<T>: the one error type used across dcomp modules.
//
// Codes are numerically equal to gRPC's (grpc::StatusCode), so the service maps them 1:1. Functions
// that can fail return Status or Result<T>; both are [[nodiscard]]. No exceptions cross a module
// boundary: code that calls a throwing dependency catches at that boundary and returns a Status.
// Conventions: kInvalidArgument for bad input from a user or file, kDataLoss for corrupt data
// (checksums, truncation), kUnavailable for a device or resource that cannot be used now,
// kResourceExhausted for budget/queue limits, kUnimplemented for a valid but unsupported feature.
// Status and Result are values: copy and move freely; they are not synchronised.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace dcomp {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message".
  std::string ToString() const;

  // Returns a copy whose message is "context: message" (no-op on OK).
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status DataLossError(std::string message);
Status UnimplementedError(std::string message);
Status InternalError(std::string message);
Status UnavailableError(std::string message);
Status OutOfRangeError(std::string message);
Status ResourceExhaustedError(std::string message);
Status FailedPreconditionError(std::string message);
Status CancelledError(std::string message);
Status DeadlineExceededError(std::string message);

// Maps an errno value to a Status: ENOENT -> NotFound, EACCES/EPERM -> PermissionDenied,
// EIO -> DataLoss... `context` names what was being done ("open /path/model.gguf").
Status ErrnoToStatus(int err, std::string_view context);

// Result<T>: either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  static_assert(!std::is_same_v<std::decay_t<T>, Status>, "Result<Status> is not allowed");

  Result(const T& value) : v_(value) {}            // NOLINT(google-explicit-constructor)
  Result(T&& value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result constructed from an OK Status");
    if (std::get<Status>(v_).ok()) v_ = Status(StatusCode::kInternal, "Result from OK status");
  }
  template <typename U, typename = std::enable_if_t<std::is_convertible_v<U&&, T> &&
                                                    !std::is_same_v<std::decay_t<U>, Status> &&
                                                    !std::is_same_v<std::decay_t<U>, Result<T>>>>
  Result(U&& value) : v_(T(std::forward<U>(value))) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
inline Status AsStatus(const Status& s) { return s; }
inline Status AsStatus(Status&& s) { return std::move(s); }
template <typename T>
Status AsStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace dcomp

#define DCOMP_CONCAT_INNER(a, b) a##b
#define DCOMP_CONCAT(a, b) DCOMP_CONCAT_INNER(a, b)

// Returns from the current function if `expr` (a Status or Result) is not OK.
#define RETURN_IF_ERROR(expr)                                            \
  do {                                                                   \
    ::dcomp::Status dcomp_status_ = ::dcomp::internal::AsStatus((expr)); \
    if (!dcomp_status_.ok()) return dcomp_status_;                       \
  } while (0)

// ASSIGN_OR_RETURN(auto x, ResultExpr()): declares/assigns the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  DCOMP_ASSIGN_OR_RETURN_IMPL(DCOMP_CONCAT(dcomp_result_, __LINE__), lhs, expr)
#define DCOMP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
