// What the real-server test harnesses (redis_harness, nginx_harness) share: processes, free
// loopback ports, temp dirs, and a socket whose every operation is bounded by a deadline.
//
// Internal to test/support: tests use RedisServer, NginxServer and their helpers instead (the
// harnesses' own self-tests also use LoopbackListener).
//
// Processes are forked/exec'd with PR_SET_PDEATHSIG(SIGKILL), so they die with the *thread* that
// started them. A server that forks children of its own (nginx's workers) can ask for a process
// group of its own (spawn(..., own_process_group)) to be stopped as a whole, and record it in its
// temp dir (record_process_group) so that a later test process kills what outlived a SIGKILLed
// one. The free functions may be called from any thread; a DeadlineStream or LoopbackListener is
// used by one thread at a time (LoopbackListener::shutdown() excepted).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::testing::harness {

using Clock = std::chrono::steady_clock;

// How long a harness waits for a server it started to serve, and for one it stops to exit.
inline constexpr std::chrono::seconds kStartTimeout{10};
inline constexpr std::chrono::seconds kStopTimeout{10};

// "what: strerror(errno)".
std::string errno_text(const char* what);
// Milliseconds left until `deadline`, clamped to [0, INT_MAX], for poll().
int remaining_ms(Clock::time_point deadline);
// $name, or `fallback` when it is unset or empty.
const char* env_or(const char* name, const char* fallback);
// argv for messages: empty or spaced arguments quoted.
std::string show_command(const std::vector<std::string>& argv);
// "exited with status N" / "killed by signal N", from a wait status.
std::string describe_status(int status);

// The last `lines` lines of a file ("" if it cannot be read).
std::string tail_of_file(const std::string& path, std::size_t lines);
// The size of a file in bytes, 0 if it does not exist.
std::uintmax_t file_size_or_zero(const std::string& path);
// The last `lines` lines of a server's log, then of its captured stdout/stderr (if any), for
// failure messages; "(empty)" when both are.
std::string log_tails(const std::string& log_path, const std::string& output_path,
                      std::size_t lines);
// A file's contents from byte `offset` on ("" if it cannot be read): what a log gained since.
std::string read_file_from(const std::string& path, std::uintmax_t offset);

// ---- processes ----------------------------------------------------------------------------------

// fork/exec argv[0] (resolved on $PATH when it has no '/') in `cwd` (unless empty), stdin from
// /dev/null, stdout and stderr to out_fd. The child gets SIGKILL when the calling thread dies. With
// own_process_group, the child leads a process group of its own (its pid is the group's id).
pid_t spawn(const std::vector<std::string>& argv, const std::string& cwd, int out_fd,
            bool own_process_group = false);
// spawn() with stdout and stderr appended to the file `out_path` (created 0600 if need be).
pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& cwd,
                   const std::string& out_path, bool own_process_group = false);
// Reaps `pid` (blocking), retrying on EINTR; returns the wait status (-1 on error).
int wait_exit(pid_t pid);
// True once `pid` (a child) has exited, without reaping it: while it is an unreaped zombie its pid,
// and so its process group id, cannot be reused, so the group can still be killed safely.
bool exited_unreaped(pid_t pid);

struct ProcessResult {
  int status = 0;      // wait status
  std::string output;  // stdout and stderr, interleaved
};
// Runs a command to completion, capturing stdout+stderr; SIGKILLs it and throws
// std::runtime_error (with the output so far) past the timeout.
ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::seconds timeout);

// ---- ports --------------------------------------------------------------------------------------

// A random loopback port below the kernel's ephemeral range (32768+) that is bindable now and was
// not handed out before in this process; with companion_offset != 0, port + companion_offset must
// be too (Redis Cluster's bus port). Random so that test binaries running in parallel rarely
// collide; a collision that still happens shows up as the server failing to bind, and the harness
// then tries another port. Thread-safe. Throws std::runtime_error when none is found.
int pick_port(int companion_offset = 0);

// ---- temp dirs ----------------------------------------------------------------------------------

// Creates /tmp/<prefix>XXXXXX (mode 0700) holding an owner file with this process's pid.
// The first call for a prefix in a process also sweeps stale dirs with that prefix: those whose
// owner no longer exists (a test process that was SIGKILLed, e.g. by a ctest timeout) are
// removed, after SIGKILLing what still runs in them from a recorded process group. Thread-safe.
std::string make_temp_dir(const std::string& prefix);
// Records that the process group `pgid` runs in `dir` (as its cwd), for the sweep.
void record_process_group(const std::string& dir, pid_t pgid);
// Removes `dir`, or, when keep_env names a set environment variable, keeps it but drops the owner
// file so that no sweep removes it. Never throws.
void remove_temp_dir(const std::string& dir, const char* keep_env = nullptr);

// ---- sockets ------------------------------------------------------------------------------------

// A connected non-blocking stream socket with a read buffer; every operation is bounded by one
// deadline. Failures throw std::runtime_error("<label>: <what>").
class DeadlineStream {
 public:
  // Connects to IPv4 `host`:`port`. The socket closes with RST (SO_LINGER 0): the many short-lived
  // connections of polling loops leave no TIME_WAIT behind.
  static DeadlineStream connect_tcp(const std::string& host, int port, Clock::time_point deadline,
                                    std::string label);
  static DeadlineStream connect_unix(const std::string& path, Clock::time_point deadline,
                                     std::string label);

  DeadlineStream(DeadlineStream&& other) noexcept;
  DeadlineStream& operator=(DeadlineStream&&) = delete;
  DeadlineStream(const DeadlineStream&) = delete;
  DeadlineStream& operator=(const DeadlineStream&) = delete;
  ~DeadlineStream();

  void write_all(std::string_view data);
  // A line without its CRLF; throws if the peer closes first.
  std::string read_line();
  // Exactly n bytes; throws if the peer closes first.
  std::string read_exact(std::size_t n);
  // Everything until the peer closes.
  std::string read_to_eof();

  [[noreturn]] void fail(const std::string& what) const;

 private:
  DeadlineStream(int fd, Clock::time_point deadline, std::string label);
  void wait_connected();
  bool fill();  // reads what arrives into buf_; false at EOF

  int fd_;
  Clock::time_point deadline_;
  std::string label_;
  std::string buf_;
  std::size_t pos_ = 0;
};

// A listening TCP socket on a free (kernel-chosen) loopback port: a port that "another process"
// holds, or the listening end of a canned peer in a test. Throws std::runtime_error on failure.
class LoopbackListener {
 public:
  LoopbackListener();
  ~LoopbackListener();
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  int port() const { return port_; }
  int fd() const { return fd_; }
  // Makes a thread blocked in accept() on fd() return (with an error). Thread-safe.
  void shutdown();

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace sluice::testing::harness
