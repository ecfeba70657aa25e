// TestCerts generates, with the openssl command line tool, a throwaway PKI for TLS tests in a temp
// dir of its own: a CA, a server certificate for localhost and 127.0.0.1 signed by it, a client
// certificate signed by it, and a second, unrelated CA (to be verified against and fail). EC keys
// (P-256), valid for two days. Throws std::runtime_error with openssl's output if a step fails.
#pragma once

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/harness_common.h"

namespace sluice::testing {

class TestCerts {
 public:
  TestCerts() : dir_(harness::make_temp_dir("sluice-certs")) {
    ca("ca", "sluice test CA");
    ca("other-ca", "unrelated test CA");
    leaf("server", "localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
         "extendedKeyUsage=serverAuth\n");
    leaf("client", "sluice test client", "extendedKeyUsage=clientAuth\n");
  }
  ~TestCerts() { harness::remove_temp_dir(dir_); }
  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  const std::string& dir() const { return dir_; }
  std::string ca() const { return dir_ + "/ca.crt"; }
  std::string other_ca() const { return dir_ + "/other-ca.crt"; }
  std::string server_cert() const { return dir_ + "/server.crt"; }
  std::string server_key() const { return dir_ + "/server.key"; }
  std::string client_cert() const { return dir_ + "/client.crt"; }
  std::string client_key() const { return dir_ + "/client.key"; }

 private:
  void run(const std::vector<std::string>& argv) const {
    const harness::ProcessResult r = harness::run_process(argv, std::chrono::seconds(30));
    if (r.status != 0) {
      throw std::runtime_error(harness::show_command(argv) + ": " +
                               harness::describe_status(r.status) + "\n" + r.output);
    }
  }
  void ca(const std::string& name, const std::string& cn) const {
    run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", dir_ + "/" + name + ".key", "-out", dir_ + "/" + name + ".crt",
         "-days", "2", "-subj", "/CN=" + cn});
  }
  void leaf(const std::string& name, const std::string& cn, const std::string& extensions) const {
    const std::string base = dir_ + "/" + name;
    std::ofstream(base + ".ext") << extensions;
    run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=" + cn});
    run({"openssl", "x509", "-req", "-in", base + ".csr", "-CA", dir_ + "/ca.crt", "-CAkey",
         dir_ + "/ca.key", "-CAcreateserial", "-out", base + ".crt", "-days", "2", "-extfile",
         base + ".ext"});
  }

  std::string dir_;
};

}  // namespace sluice::testing
