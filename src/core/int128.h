// Exact integer helpers for the algorithms: window indices, and 128-bit products (n * W,
// cost * W, time * n).
#pragma once

#include <cstdint>

namespace sluice {

// floor(a / b) for b > 0: the index of the window of length b that holds time a.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  const std::int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

inline constexpr i128 kI64Max = 0x7FFF'FFFF'FFFF'FFFF;

// a / b for unsigned values, in 64 bits when both fit.
constexpr u128 div_u128(u128 a, u128 b) noexcept {
  if ((a >> 64) == 0 && (b >> 64) == 0) {
    return static_cast<std::uint64_t>(a) / static_cast<std::uint64_t>(b);
  }
  return a / b;
}

// floor(a / b) for b > 0. Divides in 64 bits when both fit (128-bit division is a library call).
constexpr i128 floor_div128(i128 a, i128 b) noexcept {
  if (a >= 0 && a <= kI64Max && b <= kI64Max) {
    return static_cast<std::int64_t>(a) / static_cast<std::int64_t>(b);
  }
  i128 q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// ceil(a / b) for b > 0.
constexpr i128 ceil_div128(i128 a, i128 b) noexcept {
  if (a >= 0 && a <= kI64Max && b <= kI64Max) {
    const auto x = static_cast<std::uint64_t>(a), y = static_cast<std::uint64_t>(b);
    return x / y + (x % y != 0 ? 1 : 0);
  }
  i128 q = a / b;
  return (a % b != 0 && a > 0) ? q + 1 : q;
}

}  // namespace sluice
