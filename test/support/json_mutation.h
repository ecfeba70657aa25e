// What the JSON equivalence tests share: a deterministic random generator, and the edit that
// turns a well-formed body into a mutant (a byte replaced, bytes erased, a byte inserted, a
// truncation, or a token inserted).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace sluice::testing {

// Rng is splitmix64: deterministic, so a failure reproduces.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15u;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  bool coin() { return (next() & 1) != 0; }
  bool one_in(std::uint64_t n) { return below(n) == 0; }
  template <typename T, std::size_t N>
  const T& pick(const T (&items)[N]) {
    return items[below(N)];
  }

 private:
  std::uint64_t state_;
};

// mutate_json() makes one random edit to `body`: a byte replaced or inserted (from JSON's
// structural bytes, digits, a NUL and 0xFF), up to 8 bytes erased, a truncation, or one of
// `tokens` inserted.
inline void mutate_json(std::string& body, Rng& rng, std::span<const char* const> tokens) {
  static const char kBytes[] = "{}[]\",:0123456789.eE-+tnu\\ \0\xff";
  const std::size_t at = body.empty() ? 0 : rng.below(body.size() + 1);
  switch (rng.below(5)) {
    case 0:
      if (at < body.size()) body[at] = kBytes[rng.below(sizeof kBytes - 1)];
      break;
    case 1:
      body.erase(at, 1 + rng.below(8));
      break;
    case 2:
      body.insert(at, 1, kBytes[rng.below(sizeof kBytes - 1)]);
      break;
    case 3:
      body.resize(at);  // truncated
      break;
    default:
      body.insert(at, tokens[rng.below(tokens.size())]);
  }
}

}  // namespace sluice::testing
