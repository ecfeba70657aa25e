// zipf.h — Zipf-distributed key indices for the benchmarks: over n keys, key i (0-based, rank
// i + 1) is drawn with probability proportional to 1 / (i + 1)^s, s > 0 the exponent (1 in the
// peer benchmarks' "1M keys Zipf", bench/peers/README.md).
//
// A draw is the inverse of the cumulative weights: a uniform draw in [0, total) looked up by
// binary search in a table of the n cumulative weights, built once (8 bytes per key: 8 MB for a
// million) and then only read, so any number of threads can draw from one distribution, each
// with its own generator.
//
//   const sluice::bench::ZipfDistribution zipf(1'000'000, 1.0);  // built once
//   std::mt19937_64 rng(seed);                                      // one per thread
//   std::size_t key = zipf(rng);                                    // 0 .. 999'999
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace sluice::bench {

// ZipfDistribution draws key indices 0 .. n-1 with P(i) proportional to 1 / (i + 1)^exponent.
// Construction is O(n); a draw is O(log n) and allocates nothing. Drawing is thread-safe (const;
// the generator is the caller's).
class ZipfDistribution {
 public:
  // `keys` >= 1; `exponent` > 0 and finite (callers check their command line: the weights of a
  // NaN or infinite exponent are meaningless).
  ZipfDistribution(std::size_t keys, double exponent) : cdf_(std::max<std::size_t>(keys, 1)) {
    double sum = 0;
    for (std::size_t i = 0; i < cdf_.size(); ++i)
      cdf_[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), exponent));
  }

  // operator() draws one key index with the generator `g` (e.g. std::mt19937_64).
  template <class Generator>
  std::size_t operator()(Generator& g) const {
    std::uniform_real_distribution<double> u(0, cdf_.back());
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u(g));
    // A uniform draw can round up to the total itself: that is still the last key.
    return std::min(static_cast<std::size_t>(it - cdf_.begin()), cdf_.size() - 1);
  }

  // Probability() is the probability of drawing key `i`.
  double Probability(std::size_t i) const {
    return (cdf_[i] - (i == 0 ? 0.0 : cdf_[i - 1])) / cdf_.back();
  }

  std::size_t keys() const { return cdf_.size(); }

 private:
  std::vector<double> cdf_;  // cdf_[i]: the weights of keys 0..i, summed
};

}  // namespace sluice::bench
