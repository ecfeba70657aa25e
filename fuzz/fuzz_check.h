// What every fuzz target shares: FUZZ_CHECK, an invariant that stops the run as a crash does.
#pragma once

#include <cstdio>
#include <cstdlib>

// FUZZ_CHECK(condition, what) aborts with a message when `condition` is false, so that libFuzzer
// reports the input as a crash and saves it (crash-<sha1>) for a regression test.
#define FUZZ_CHECK(condition, what)                                                     \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "invariant failed at %s:%d: %s\n  %s\n", __FILE__, __LINE__, \
                   #condition, static_cast<const char*>(what));                         \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
