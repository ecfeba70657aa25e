// sluice behind a real nginx (Debian's package): auth_request to /v1/authz. Within one window
// the (N+1)-th request through nginx is denied; the earlier ones pass.
#include "server/fixture_rules.h"
#include "server/server_fixture.h"

namespace sluice::testing {
namespace {

TEST(Nginx, AuthRequestDeniesTheRequestPastTheLimit) {
  TempDir dir;
  dir.write("paths.yaml", kPathRules);  // /api/*: 4 per minute per client_ip
  ServerOptions o;
  o.authz.deny_status = 403;  // auth_request passes only 401 and 403 through
  ServerHarness sluice(dir.path(), o);

  NginxServer nginx({.http_block = "upstream sluice { server 127.0.0.1:" +
                                   std::to_string(sluice.http_port()) + "; keepalive 4; }",
                     .server_block = R"(
        location /api/ {
          auth_request /_sluice;
          proxy_pass http://127.0.0.1:$server_port/_app;
        }
        location = /_sluice {
          internal;
          proxy_pass http://sluice/v1/authz;
          proxy_http_version 1.1;
          proxy_set_header Connection "";
          proxy_pass_request_body off;
          proxy_set_header Content-Length "";
          proxy_set_header X-Original-URI $request_uri;
          proxy_set_header X-Original-Method $request_method;
          proxy_set_header X-Real-IP $remote_addr;
        }
        location = /_app { return 200 "app\n"; }
      )"});

  for (int i = 1; i <= 4; ++i) {
    HttpReply r = http_request(nginx.port(), "GET", "/api/orders?page=" + std::to_string(i));
    EXPECT_EQ(r.status, 200) << "request " << i << ": " << r.body << "\n" << nginx.log_tail();
    EXPECT_EQ(r.body, "app\n");
  }
  HttpReply denied = http_request(nginx.port(), "GET", "/api/orders");
  EXPECT_EQ(denied.status, 403) << denied.body << "\n" << nginx.log_tail();
  // A new window admits again (the manual clock moves; nothing sleeps).
  sluice.clock.advance(std::chrono::minutes(1));
  EXPECT_EQ(http_request(nginx.port(), "GET", "/api/orders").status, 200);
}

}  // namespace
}  // namespace sluice::testing
