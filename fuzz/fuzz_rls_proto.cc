// Fuzz target: Envoy's RateLimitRequest as the gRPC service reads it. ShouldRateLimit takes the
// raw bytes of the call (a grpc::ByteBuffer) and deserializes them itself; this target does the
// same with the same call, then answers as RateLimitService::decide() does (to_request(), the
// Limiter over the example rules and the memory store, to_response()) and serializes the answer.
//
// Invariants, besides no crash, leak or undefined behaviour:
// - gRPC's deserialization accepts exactly what protobuf's ParseFromArray accepts;
// - decide() refuses (INVALID_ARGUMENT) exactly the requests without a domain or descriptors;
// - an answer has one status per descriptor, and overall_code OVER_LIMIT exactly when one of
//   them is OVER_LIMIT; it serializes, and parses back to the same message;
// - the answer in proto3 JSON (what POST /json sends) is protobuf's own rendering, byte for
//   byte, when append_envoy_json_direct() writes it; and the request rendered by protobuf as
//   JSON reads back, through parse_envoy_json(), as the same request.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpc/grpc.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "server/embedded_rules.h"
#include "server/envoy_json.h"
#include "server/grpc_server.h"
#include "sluice/config.h"
#include "sluice/memory_store.h"

namespace {

namespace rls = sluice::server::rls;
using google::protobuf::util::MessageDifferencer;

// Fixture is the service over the example rules, alive for the whole run.
struct Fixture {
  Fixture() {
    sluice::RuleSource source;
    for (const sluice::server::EmbeddedRuleFile& f : sluice::server::embedded_rules())
      FUZZ_CHECK(sluice::parse_rules(f.text, f.name, source).empty(), "the examples do not load");
    limiter.set_rules(sluice::RuleSet::compile(std::move(source)));
  }
  sluice::ManualClock clock{sluice::seconds_to_micros(1'700'000'000)};
  sluice::MemoryStore store{{.max_keys = 1 << 16, .shards = 4}};
  sluice::Limiter limiter{sluice::RuleSet::empty(), store, clock};
  sluice::server::Metrics metrics;
  sluice::server::RateLimitService service{limiter, metrics};
};

Fixture* fixture = nullptr;

void check_json(const rls::RateLimitRequest& request, const rls::RateLimitResponse& response) {
  std::string fast;
  if (sluice::server::append_envoy_json_direct(fast, response)) {
    std::string expected;
    FUZZ_CHECK(google::protobuf::util::MessageToJsonString(response, &expected).ok(),
               "protobuf cannot render an answer the fast path renders");
    FUZZ_CHECK(fast == expected, "the fast path renders the answer unlike protobuf");
  }
  // Unknown fields have no JSON form: compare what has one.
  rls::RateLimitRequest known = request;
  known.DiscardUnknownFields();
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(known, &text).ok()) return;
  rls::RateLimitRequest back;
  std::string error;
  FUZZ_CHECK(sluice::server::parse_envoy_json(text, back, error), error.c_str());
  FUZZ_CHECK(MessageDifferencer::Equals(back, known), "the request does not read back from JSON");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  grpc_init();  // grpc::ByteBuffer and its slices need the library initialised
  google::protobuf::SetLogHandler(nullptr);  // a string that is not UTF-8 logs an error each time
  static Fixture instance;
  fixture = &instance;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fixture->clock.advance(std::chrono::milliseconds(100));

  // As RawRateLimitService::ShouldRateLimit reads the call.
  grpc::Slice slice(data, size);
  grpc::ByteBuffer buffer(&slice, 1);
  rls::RateLimitRequest request;
  const bool read =
      grpc::SerializationTraits<rls::RateLimitRequest>::Deserialize(&buffer, &request).ok();
  rls::RateLimitRequest plain;
  FUZZ_CHECK(read == plain.ParseFromArray(data, static_cast<int>(size)),
             "gRPC and protobuf disagree on whether the bytes are a RateLimitRequest");
  if (!read) return 0;

  rls::RateLimitResponse response;
  const grpc::Status status = fixture->service.decide(request, response);
  const bool valid = !request.domain().empty() && request.descriptors_size() > 0;
  FUZZ_CHECK(status.ok() == valid, "refused a valid request, or took an invalid one");
  if (!status.ok()) {
    FUZZ_CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT, "not INVALID_ARGUMENT");
    return 0;
  }
  FUZZ_CHECK(response.statuses_size() == request.descriptors_size(),
             "not one status per descriptor");
  bool over = false;
  for (const auto& s : response.statuses())
    over |= s.code() == rls::RateLimitResponse::OVER_LIMIT;
  FUZZ_CHECK((response.overall_code() == rls::RateLimitResponse::OVER_LIMIT) == over,
             "overall_code disagrees with the statuses");

  grpc::ByteBuffer out;
  bool own = false;
  FUZZ_CHECK(
      grpc::SerializationTraits<rls::RateLimitResponse>::Serialize(response, &out, &own).ok(),
      "the answer does not serialize");
  rls::RateLimitResponse back;
  FUZZ_CHECK(grpc::SerializationTraits<rls::RateLimitResponse>::Deserialize(&out, &back).ok() &&
                 MessageDifferencer::Equals(back, response),
             "the answer does not parse back");

  check_json(request, response);
  return 0;
}
