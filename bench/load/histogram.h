// load/histogram.h — the latency histograms of sluice-bench.
//
// LatencyHistogram is a log-linear (HdrHistogram-like) histogram of durations in nanoseconds:
// values below 128 ns have a bucket each, and every power of two above is split into 128
// equal buckets, so a bucket is never wider than 1/128 (0.78 %) of the values it holds. It
// covers 0 .. 60 s in 3 808 buckets (30 KiB); longer durations land in the last bucket, and the
// exact maximum is kept apart.
//
// Recording is a few instructions and never allocates. Each client thread owns its histograms
// (one writer); the progress reporter reads them while they are being written, which is why the
// buckets are relaxed atomics: the owner's load+store compiles to a plain increment (no locked
// instruction), and the reader sees each bucket's value at some recent moment — good enough for
// "p99 so far". The final summary merges them after the threads have been joined.
//
//   LatencyHistogram h;                       // owned by one thread
//   h.Record(std::chrono::microseconds(87));
//   HistogramSnapshot s;                      // any thread
//   s.Add(h);
//   s.Percentile(99.0);                       // nanoseconds
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::load {

// OwnedCounter is a counter written by one thread (its owner) and read by any. Add() is not
// thread-safe against another writer; Get() is thread-safe.
class OwnedCounter {
 public:
  void Add(std::uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void SetMax(std::uint64_t v) {
    if (v > value_.load(std::memory_order_relaxed)) value_.store(v, std::memory_order_relaxed);
  }
  std::uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// The bucket layout, shared by LatencyHistogram and HistogramSnapshot.
inline constexpr int kSubBucketBits = 7;
inline constexpr std::uint64_t kSubBuckets = std::uint64_t{1} << kSubBucketBits;
inline constexpr std::uint64_t kMaxTrackableNanos = 60'000'000'000;  // 60 s

// BucketOf() returns the bucket index of `ns`.
constexpr std::size_t BucketOf(std::uint64_t ns) {
  ns = std::min(ns, kMaxTrackableNanos);
  if (ns < kSubBuckets) return ns;
  const int shift = std::bit_width(ns) - 1 - kSubBucketBits;  // >= 0
  return kSubBuckets * static_cast<std::uint64_t>(1 + shift) + ((ns >> shift) - kSubBuckets);
}

// HighestEquivalent() returns the largest value that lands in bucket `index`: percentiles
// report it (as HdrHistogram does), so they err high, by less than one bucket's width.
constexpr std::uint64_t HighestEquivalent(std::size_t index) {
  if (index < kSubBuckets) return index;
  const std::size_t shift = index / kSubBuckets - 1;
  const std::uint64_t sub = index % kSubBuckets + kSubBuckets;
  return ((sub + 1) << shift) - 1;
}

inline constexpr std::size_t kHistogramBuckets = BucketOf(kMaxTrackableNanos) + 1;

static_assert(kHistogramBuckets == 3808);
static_assert(HighestEquivalent(BucketOf(1'000'000)) >= 1'000'000);
static_assert(HighestEquivalent(BucketOf(1'000'000)) <= 1'000'000 + 1'000'000 / kSubBuckets);

// LatencyHistogram: see the file comment. Record() is for the owner thread only.
class LatencyHistogram {
 public:
  // Record() adds one duration. Owner thread only. Negative durations count as 0.
  void Record(std::chrono::nanoseconds d) {
    const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0));
    auto& bucket = buckets_[BucketOf(ns)];
    bucket.store(bucket.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    count_.Add();
    sum_.Add(ns);
    max_.SetMax(ns);
  }

 private:
  friend class HistogramSnapshot;
  std::array<std::atomic<std::uint64_t>, kHistogramBuckets> buckets_{};
  OwnedCounter count_, sum_, max_;
};

// HistogramSnapshot is a plain copy of one or more histograms, merged. Not thread-safe.
class HistogramSnapshot {
 public:
  HistogramSnapshot() : buckets_(kHistogramBuckets, 0) {}

  // Add() merges `h` in. Safe while h's owner records (see the file comment).
  void Add(const LatencyHistogram& h) {
    for (std::size_t i = 0; i < kHistogramBuckets; ++i)
      buckets_[i] += h.buckets_[i].load(std::memory_order_relaxed);
    count_ += h.count_.Get();
    sum_ += h.sum_.Get();
    max_ = std::max(max_, h.max_.Get());
  }

  std::uint64_t Count() const { return count_; }
  std::uint64_t MaxNanos() const { return max_; }
  double MeanNanos() const { return count_ == 0 ? 0 : static_cast<double>(sum_) / count_; }

  // Percentile() returns the value (ns) at or below which `p` percent of the recorded values
  // lie, 0 when empty; never above the exact maximum.
  std::uint64_t Percentile(double p) const {
    std::uint64_t total = 0;
    for (std::uint64_t b : buckets_)
      total += b;
    if (total == 0) return 0;
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) return std::min(HighestEquivalent(i), max_);
    }
    return max_;
  }

 private:
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0, sum_ = 0, max_ = 0;
};

}  // namespace sluice::load
