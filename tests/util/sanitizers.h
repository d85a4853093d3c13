// DCOMP_SANITIZED is defined when the test is built with AddressSanitizer or ThreadSanitizer: GCC
// defines __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__; clang (the tsan preset) only answers
// __has_feature.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DCOMP_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DCOMP_SANITIZED 1
#endif
#endif
