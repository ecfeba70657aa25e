#include "server/grpc_server.h"

#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "server/convert.h"
#include "server/http_server.h"

namespace sluice::server {

grpc::ServerUnaryReactor* RawRateLimitService::ShouldRateLimit(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request,
                                                               grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  rls::RateLimitRequest req;
  grpc::ByteBuffer copy(*request);  // shares the slices; Deserialize consumes its buffer
  if (!grpc::SerializationTraits<rls::RateLimitRequest>::Deserialize(&copy, &req).ok()) {
    refused();
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "malformed RateLimitRequest: not a valid protobuf message"));
    return reactor;
  }
  if (pool_ == nullptr) {
    finish(this, reactor, req, response);
  } else {
    {
      std::lock_guard lock(pending_mu_);
      ++pending_;
    }
    pool_->post([this, reactor, response, req = std::move(req)] {
      finish(this, reactor, req, response);
      std::lock_guard lock(pending_mu_);
      if (--pending_ == 0) pending_cv_.notify_all();
    });
  }
  return reactor;
}

void RawRateLimitService::drain() {
  std::unique_lock lock(pending_mu_);
  pending_cv_.wait(lock, [this] { return pending_ == 0; });
}

void RawRateLimitService::finish(RawRateLimitService* self, grpc::ServerUnaryReactor* reactor,
                                 const rls::RateLimitRequest& request, grpc::ByteBuffer* out) {
  rls::RateLimitResponse response;
  grpc::Status status = self->answer(request, response);
  if (status.ok()) {
    bool own = false;
    status = grpc::SerializationTraits<rls::RateLimitResponse>::Serialize(response, out, &own);
  }
  reactor->Finish(status);
}

grpc::Status RateLimitService::decide(const rls::RateLimitRequest& request,
                                      rls::RateLimitResponse& response) {
  Request req;
  std::string error;
  if (!to_request(request, req, error)) {
    metrics_.record_error(Api::kGrpc);
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
  }
  const auto start = std::chrono::steady_clock::now();
  const Decision decision = limiter_.decide(req);
  const Micros elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  metrics_.record(Api::kGrpc, req.domain, decision, elapsed);
  to_response(decision, req, response);
  return grpc::Status::OK;
}

GrpcServer::~GrpcServer() {
  shutdown(std::chrono::milliseconds(0));
}

namespace {

// read_pem() reads a whole PEM file for gRPC's TLS; false with `error` when it cannot.
bool read_pem(const std::string& path, const char* what, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN") == std::string::npos) {
    error = std::string("TLS (gRPC): cannot read the ") + what + " '" + path + "' as PEM";
    return false;
  }
  out = text.str();
  return true;
}

}  // namespace

bool GrpcServer::start(const std::vector<grpc::Service*>& services, std::string& error) {
  std::string host;
  std::uint16_t port = 0;
  if (!parse_listen(options_.listen, host, port, error)) return false;
  // The built-in implementation of grpc.health.v1.Health; a process-wide switch, set before
  // the server is built.
  grpc::EnableDefaultHealthCheckService(true);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    grpc::SslServerCredentialsOptions tls(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!read_pem(options_.tls_cert_file, "certificate", pair.cert_chain, error) ||
        !read_pem(options_.tls_key_file, "private key", pair.private_key, error)) {
      return false;
    }
    tls.pem_key_cert_pairs.push_back(std::move(pair));
    if (!options_.tls_client_ca_file.empty()) {
      if (!read_pem(options_.tls_client_ca_file, "client CA", tls.pem_root_certs, error))
        return false;
      tls.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(tls);
  } else if (!options_.tls_client_ca_file.empty()) {
    error = "TLS (gRPC): a client CA needs a certificate and key of the server's own";
    return false;
  }
  grpc::ServerBuilder builder;
  int selected = 0;
  builder.AddListeningPort(options_.listen, credentials, &selected);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  if (options_.idle_timeout.count() > 0) {
    const int ms =
        static_cast<int>(std::min<std::int64_t>(options_.idle_timeout.count(), INT32_MAX));
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, ms);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms);
  }
  for (grpc::Service* s : services) {
    builder.RegisterService(s);
    if (auto* rls = dynamic_cast<RawRateLimitService*>(s)) rate_limit_services_.push_back(rls);
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || selected == 0) {
    error = "cannot listen on " + options_.listen + " (gRPC)";
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    return false;
  }
  port_ = static_cast<std::uint16_t>(selected);
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(true);
  return true;
}

void GrpcServer::shutdown(std::chrono::milliseconds grace) {
  if (server_ == nullptr) return;
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  // A pool thread may still be inside a reactor's Finish() (Wait() returns once it is called):
  // the server goes only once every such call has returned. Decisions are bounded by the
  // store's timeout, so this wait is too.
  for (RawRateLimitService* s : rate_limit_services_)
    s->drain();
  server_.reset();
}

}  // namespace sluice::server
