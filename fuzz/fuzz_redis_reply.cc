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

void read_verdicts(const Reply& reply) {
  for (const std::vector<Hit>& hits : hit_lists()) {
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
  if (result.status.ok()) {
    std::vector<Verdict> out(hits.size());
    if (sluice::redis::read_decide_reply(result.reply, hits, out).ok()) {
      for (std::size_t i = 0; i < hits.size(); ++i)
        check_verdict(out[i], hits[i]);
    }
  }
  return 0;
}
