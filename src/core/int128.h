// Exact 128-bit helpers for the algorithms' products (n * W, cost * W, time * n).
#pragma once

#include <cstdint>

namespace sluice {

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

// floor(a / b) for b > 0.
constexpr i128 floor_div128(i128 a, i128 b) noexcept {
  i128 q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// ceil(a / b) for b > 0.
constexpr i128 ceil_div128(i128 a, i128 b) noexcept {
  i128 q = a / b;
  return (a % b != 0 && a > 0) ? q + 1 : q;
}

}  // namespace sluice
