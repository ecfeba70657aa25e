#include "support/redis_harness.h"
