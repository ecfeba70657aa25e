// The gRPC front end: Envoy's RateLimitService (envoy.service.ratelimit.v3) on the limiter, and
// gRPC's standard health service (grpc.health.v1.Health), which answers SERVING until shutdown.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "server/blocking_pool.h"
#include "server/metrics.h"
#include "sluice/limiter.h"

namespace sluice::server {

namespace rls = envoy::service::ratelimit::v3;

// RawRateLimitService serves Envoy's ShouldRateLimit on gRPC's callback API, reading and
// writing the messages itself (identical on the wire): a malformed request gets
// INVALID_ARGUMENT with a message, where gRPC's own reading would answer INTERNAL with none.
// answer() runs on gRPC's callback thread, or, given a pool, on one of its threads (for
// answers that block).
class RawRateLimitService : public rls::RateLimitService::WithRawCallbackMethod_ShouldRateLimit<
                                rls::RateLimitService::Service> {
 public:
  explicit RawRateLimitService(BlockingPool* pool = nullptr) : pool_(pool) {}
  grpc::ServerUnaryReactor* ShouldRateLimit(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response) final;
  virtual grpc::Status answer(const rls::RateLimitRequest& request,
                              rls::RateLimitResponse& response) = 0;
  // refused() is told of each malformed request.
  virtual void refused() {}
  // drain() waits until no call handed to the pool is still answering (the last one is past its
  // reactor's Finish()), so that the gRPC server can be destroyed.
  void drain();

 private:
  static void finish(RawRateLimitService* self, grpc::ServerUnaryReactor* reactor,
                     const rls::RateLimitRequest& request, grpc::ByteBuffer* out);
  BlockingPool* pool_;
  std::mutex pending_mu_;
  std::condition_variable pending_cv_;
  std::size_t pending_ = 0;  // calls handed to the pool and not yet finished
};

// RateLimitService decides ShouldRateLimit calls with a Limiter.
class RateLimitService final : public RawRateLimitService {
 public:
  RateLimitService(Limiter& limiter, Metrics& metrics, BlockingPool* pool = nullptr)
      : RawRateLimitService(pool), limiter_(limiter), metrics_(metrics) {}
  grpc::Status answer(const rls::RateLimitRequest& request,
                      rls::RateLimitResponse& response) override {
    return decide(request, response);
  }
  void refused() override { metrics_.record_error(Api::kGrpc); }
  // decide() answers one request.
  grpc::Status decide(const rls::RateLimitRequest& request, rls::RateLimitResponse& response);

 private:
  Limiter& limiter_;
  Metrics& metrics_;
};

struct GrpcServerOptions {
  std::string listen = "127.0.0.1:8081";  // host:port; port 0 picks a free one
  int max_message_bytes = 1 << 20;
  // 0 keeps gRPC's own defaults (a connection must finish its handshake within 120 s; HTTP/2
  // connections without calls stay open). Otherwise both: a connection that has not sent its
  // HTTP/2 preface within this time is closed, and one without a call in flight for this long
  // gets a GOAWAY (its client reconnects when it next calls).
  std::chrono::milliseconds idle_timeout{0};
  // TLS when both are set (PEM files, read at start()); with tls_client_ca_file, clients must
  // present a certificate those CAs signed.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// GrpcServer runs gRPC services on one listening address. The services must outlive it.
class GrpcServer {
 public:
  explicit GrpcServer(GrpcServerOptions options) : options_(std::move(options)) {}
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // start() listens and serves `services` plus the health service. False with `error` when it
  // cannot listen.
  bool start(const std::vector<grpc::Service*>& services, std::string& error);
  std::uint16_t port() const noexcept { return port_; }
  // shutdown() reports NOT_SERVING, stops accepting calls, lets the calls in flight finish
  // (cancelling what still runs after `grace`) and waits. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(10));

 private:
  GrpcServerOptions options_;
  std::vector<RawRateLimitService*> rate_limit_services_;  // drained before server_ goes
  std::unique_ptr<grpc::Server> server_;
  std::uint16_t port_ = 0;
};

}  // namespace sluice::server
