// Batches of independent commands, sent at once: the eventual-consistency replicator
// (src/sync/) sends its whole sync round this way.
#pragma once

#include <string>
#include <vector>

#include "storage/redis/client.h"

namespace sluice::redis {

// SlotCommand is one command and the Redis Cluster slot of its keys (ignored by one server).
struct SlotCommand {
  int slot = 0;
  std::vector<std::string> argv;
};

// Batcher sends independent commands as one pipeline per server. Thread-safe.
class Batcher {
 public:
  virtual ~Batcher() = default;
  // run() sends every command and returns one result per command, in order. A command that
  // could not be sent (server down, circuit open, no known owner of its slot) has a failed
  // status and certainly did not run; a timed-out one may have run. Cluster redirections
  // (MOVED, ASK) come back as error replies: the command did not run, and the slot map is
  // refreshed for the next batch.
  virtual std::vector<CommandResult> run(const std::vector<SlotCommand>& commands) = 0;
};

}  // namespace sluice::redis
