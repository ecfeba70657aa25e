// bench_values.h — the 32-byte descriptor values the memory-store benchmarks decide on
// (limiter_bench.cc, scaling_bench.cc), so that both measure the same keys.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice::bench {

// Writes the value of key `i` ("tenant-" + 16 hex digits, padded) into `out`, which already
// holds 32 bytes: the request is built in cache, as a server parsing it would have it.
inline void WriteValue(std::string& out, std::size_t i) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t x = i * 0x9E3779B97F4A7C15ull;  // spread ids over the hex space
  for (int d = 0; d < 16; ++d)
    out[7 + static_cast<std::size_t>(d)] = kHex[(x >> (4 * d)) & 0xf];
}

}  // namespace sluice::bench
