// Fuzz target: what sluice reads from a Redis server, as a malformed or hostile server could send
// it. Bytes go through sluice::redis::ReplyReader (split in two feeds, at a point the input
// picks), and each reply it returns through the decide script's reply path: run_decide_script()
// (which retries with EVAL on NOSCRIPT and unwraps a one-request call) and read_decide_reply()
// against fixed hit lists (each algorithm alone, all four together, and limits at their largest),
// as the single-server and Cluster stores read a call's replies.
//
// Invariants, besides no crash, leak or undefined behaviour:
// - once the reader reports a protocol error, it keeps reporting it;
// - a reply read as verdicts gives each hit a Verdict within the contract of algorithms.h:
//   remaining at most the limit's capacity, reset_after and retry_after not negative,
//   retry_after 0 exactly when allowed (kNever only when the cost exceeds the capacity).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"

namespace {

using sluice::Algorithm;
using sluice::Hit;
using sluice::LimitSpec;
using sluice::Verdict;
using sluice::redis::Reply;

constexpr sluice::Micros kSecond = 1'000'000;

// KNOWN BUG, reported, not ours to fix (src/storage/redis/client.cc belongs to the Redis work):
// ReplyReader sizes an array's elements as soon as its header arrives, so a few bytes such as
// "*30000000\r\n" allocate 2 GB before any element is sent (docs/reliability.md, bug 2; the
// disabled regression test ReplyReaderTest.DISABLED_AnArrayHeaderAloneAllocatesNothingLarge).
// Until it is fixed, inputs announcing larger arrays than this are skipped, so that the fuzzer
// keeps looking for everything else. Remove announces_huge_array() with the fix.
constexpr std::uint64_t kLargestArrayTried = 1 << 16;

// announces_huge_array() tells whether `bytes` holds a '*' and a count above kLargestArrayTried.
bool announces_huge_array(std::string_view bytes) {
  for (std::size_t i = bytes.find('*'); i != std::string_view::npos; i = bytes.find('*', i + 1)) {
    std::uint64_t n = 0;
    for (std::size_t j = i + 1; j < bytes.size() && bytes[j] >= '0' && bytes[j] <= '9'; ++j) {
      n = n * 10 + static_cast<std::uint64_t>(bytes[j] - '0');
      if (n > kLargestArrayTried) return true;
    }
  }
  return false;
}

const LimitSpec kFixed{.algorithm = Algorithm::kFixedWindow, .limit = 10, .window = kSecond};
const LimitSpec kLog{.algorithm = Algorithm::kSlidingWindowLog, .limit = 10, .window = kSecond};
const LimitSpec kCounter{
    .algorithm = Algorithm::kSlidingWindowCounter, .limit = 10, .window = 60 * kSecond};
const LimitSpec kBucket{
    .algorithm = Algorithm::kTokenBucket, .limit = 5, .window = kSecond, .burst = 20};
// The largest limits the rules allow: every product of the exact arithmetic at its widest.
const LimitSpec kHugeBucket{.algorithm = Algorithm::kTokenBucket,
                            .limit = sluice::kMaxLimit,
                            .window = sluice::kMaxWindow,
                            .burst = sluice::kMaxLimit};
const LimitSpec kHugeCounter{.algorithm = Algorithm::kSlidingWindowCounter,
                             .limit = sluice::kMaxLimit,
                             .window = sluice::kMaxWindow};

const std::vector<std::vector<Hit>>& hit_lists() {
  static const std::vector<std::vector<Hit>> lists = {
      {{.key = "f", .spec = &kFixed}},
      {{.key = "l", .spec = &kLog, .cost = 3}},
      {{.key = "c", .spec = &kCounter}},
      {{.key = "b", .spec = &kBucket, .cost = 2}},
      {{.key = "f", .spec = &kFixed, .cost = 0},
       {.key = "l", .spec = &kLog, .enforce = false},
       {.key = "c", .spec = &kCounter, .cost = 11},
       {.key = "b", .spec = &kBucket}},
      {{.key = "hb", .spec = &kHugeBucket, .cost = sluice::kMaxLimit},
       {.key = "hc", .spec = &kHugeCounter, .cost = 7}},
  };
  return lists;
}

void check_verdict(const Verdict& v, const Hit& hit) {
  const std::uint64_t capacity =
      hit.spec->algorithm == Algorithm::kTokenBucket ? hit.spec->capacity() : hit.spec->limit;
  FUZZ_CHECK(v.remaining <= capacity, "more remaining than the limit holds");
  FUZZ_CHECK(v.reset_after >= 0, "a negative reset_after");
  FUZZ_CHECK(v.retry_after >= 0, "a negative retry_after");
  if (v.allowed) {
    FUZZ_CHECK(v.retry_after == 0, "an allowed hit with a retry_after");
  } else {
    FUZZ_CHECK(v.retry_after > 0, "a denied hit that could pass now");
    FUZZ_CHECK((v.retry_after == sluice::kNever) == (hit.cost > capacity),
               "kNever for a cost the limit can hold, or a wait for one it cannot");
  }
}

// KNOWN BUG, reported, not ours to fix (src/storage/redis/decide.cc): read_decide_reply() takes
// any integers as the time and the states, and steps the algorithms on them, where the script
// only ever sends times within +-2^53 us, counts within the limits' range and a sliding log's
// entries oldest first, inside the window (docs/reliability.md, bug 3; the disabled regression
// test DecideReplyTest.DISABLED_StatesTheScriptCannotSendAreRefused). On anything else it returns
// verdicts outside the contract (a negative reset_after from an unsorted log), and a time near
// 2^63 overflows the window arithmetic. Until read_decide_reply() refuses such replies, the
// verdicts are checked only for replies the script could send. Remove as_script_sends() with the
// fix.
constexpr std::int64_t kTimeBound = std::int64_t{1} << 53;

bool time_ok(const Reply& r) {
  return r.integer > -kTimeBound && r.integer < kTimeBound;
}
bool count_ok(const Reply& r) {
  return r.integer >= 0 && static_cast<std::uint64_t>(r.integer) <= sluice::kMaxLimit;
}

// as_script_sends() tells whether `reply` is one the decide script could send for `hits`.
bool as_script_sends(const Reply& reply, std::span<const Hit> hits) {
  if (reply.type != Reply::Type::kArray || reply.elements.size() != hits.size() + 2) return false;
  const Reply& now = reply.elements[0];
  if (now.type != Reply::Type::kInteger || !time_ok(now)) return false;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    const std::vector<Reply>& e = reply.elements[i + 2].elements;
    for (const Reply& x : e)
      if (x.type != Reply::Type::kInteger) return false;
    if (e.empty()) continue;
    if (!time_ok(e[0])) return false;
    switch (hits[i].spec->algorithm) {
      case Algorithm::kFixedWindow:
        if (e.size() != 2 || !count_ok(e[1])) return false;
        break;
      case Algorithm::kSlidingWindowCounter:
        if (e.size() != 3 || !count_ok(e[1]) || !count_ok(e[2])) return false;
        break;
      case Algorithm::kTokenBucket:
        if (e.size() != 3 || !time_ok(e[1]) || !count_ok(e[2])) return false;
        break;
      case Algorithm::kSlidingWindowLog: {
        std::uint64_t sum = 0;
        for (std::size_t j = 1; j + 1 < e.size(); j += 2) {
          const bool in_order = j == 1 || e[j].integer > e[j - 2].integer;
          if (!time_ok(e[j]) || !in_order || e[j].integer > e[0].integer ||
              e[j].integer <= std::max(now.integer, e[0].integer) - hits[i].spec->window ||
              !count_ok(e[j + 1]) || e[j + 1].integer == 0) {
            return false;
          }
          sum += static_cast<std::uint64_t>(e[j + 1].integer);
        }
        if (sum > sluice::kMaxLimit) return false;
        break;
      }
    }
  }
  return true;
}

void read_verdicts(const Reply& reply) {
  for (const std::vector<Hit>& hits : hit_lists()) {
    if (!as_script_sends(reply, hits)) continue;  // the known bug above
    std::vector<Verdict> out(hits.size());
    if (!sluice::redis::read_decide_reply(reply, hits, out).ok()) continue;
    for (std::size_t i = 0; i < hits.size(); ++i)
      check_verdict(out[i], hits[i]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (announces_huge_array(bytes)) return 0;
  const std::size_t split = std::min<std::size_t>(data[0], bytes.size());

  sluice::redis::ReplyReader reader;
  std::deque<Reply> replies;
  std::string error;
  bool failed = !reader.feed(bytes.substr(0, split), error);
  for (int round = 0; round < 2 && !failed; ++round) {
    if (round == 1) failed = !reader.feed(bytes.substr(split), error);
    Reply reply;
    int got = 0;
    while (!failed && (got = reader.next(reply, error)) == 1)
      replies.push_back(std::move(reply));
    failed |= got < 0;
  }
  if (failed) {
    Reply reply;
    std::string again;
    FUZZ_CHECK(reader.next(reply, again) == -1 && again == error, "a protocol error did not stick");
  }

  for (const Reply& reply : replies) {
    read_verdicts(reply);  // one request's reply
    if (reply.type == Reply::Type::kArray) {
      for (const Reply& element : reply.elements)
        read_verdicts(element);  // a call's reply: one element per request
    }
  }

  // As a store sends a call: EVALSHA, then EVAL if Redis answers NOSCRIPT.
  const std::vector<Hit>& hits = hit_lists()[4];
  std::vector<std::string> keys;
  for (const Hit& h : hits)
    keys.push_back(std::string(h.key));
  sluice::redis::DecideCall call;
  const sluice::redis::CommandResult result = sluice::redis::run_decide_script(
      call, hits, keys, 1'700'000'000 * kSecond, 1000, [&replies](const auto&) {
        sluice::redis::CommandResult r;
        if (replies.empty()) {
          r.status = {sluice::StoreStatus::Code::kUnavailable, "no more replies"};
        } else {
          r.reply = std::move(replies.front());
          replies.pop_front();
        }
        return r;
      });
  if (result.status.ok() && as_script_sends(result.reply, hits)) {
    std::vector<Verdict> out(hits.size());
    if (sluice::redis::read_decide_reply(result.reply, hits, out).ok()) {
      for (std::size_t i = 0; i < hits.size(); ++i)
        check_verdict(out[i], hits[i]);
    }
  }
  return 0;
}
