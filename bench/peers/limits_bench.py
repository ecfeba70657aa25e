#!/usr/bin/python3
"""Closed-loop benchmark of Python's `limits` library, the peer a Python user would pick.

Runs one limiter (memory or Redis storage, fixed or moving window) on one workload for a
number of seconds, deciding one hit at a time, and prints one line of JSON with the
throughput, the latency of the timed calls, and the process's peak resident memory.
The rule is the one sluice's side uses: 100 hits per second per key, every hit costing 1.

Run it with Debian's interpreter (/usr/bin/python3): `limits` and `redis` come from the
python3-limits and python3-redis packages (see bench/peers/install.sh).

    /usr/bin/python3 bench/peers/limits_bench.py --storage memory --algorithm fixed \
        --workload zipf --seconds 5

See bench/peers/README.md for the workloads and the output schema.
"""

import argparse
import itertools
import json
import platform
import random
import resource
import sys
import time
from array import array

import limits
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

LIMIT_PER_SECOND = 100  # the rule sluice's side uses: 100 per 1-second window per key
WARMUP_SECONDS = 0.5  # run, then discarded, before the measured phase
TABLE_SIZE = 1 << 20  # precomputed key indices, walked cyclically
CDF_POINTS = 200  # quantiles of the latency sample kept in the output
SEED = 42

# Workload -> default number of distinct keys.
WORKLOAD_KEYS = {"hot": 1, "uniform": 100_000, "zipf": 1_000_000}

# Key i is a 32-byte string, as in sluice's own benchmark ("tenant-" + 25 digits).
# It is formatted on every call (a caller has to produce its key too), from an index
# read from the precomputed table.
KEY_FORMAT = "tenant-%025d"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", choices=["memory", "redis"], default="memory")
    p.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379",
        help="Redis to use with --storage redis (default %(default)s)",
    )
    p.add_argument("--workload", choices=sorted(WORKLOAD_KEYS), default="hot")
    p.add_argument("--algorithm", choices=["fixed", "moving"], default="fixed")
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration")
    p.add_argument("--keys", type=int, help="override the workload's key count")
    p.add_argument(
        "--sample-every",
        type=int,
        help="time one call in N (default: 16 with memory, 1 with redis)",
    )
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)

    if args.keys is None:
        args.keys = WORKLOAD_KEYS[args.workload]
    if args.keys < 1:
        p.error("--keys must be at least 1")
    if args.workload == "hot" and args.keys != 1:
        p.error("the hot workload has one key; use uniform or zipf for more")
    if args.sample_every is None:
        args.sample_every = 16 if args.storage == "memory" else 1
    if args.sample_every < 1:
        p.error("--sample-every must be at least 1")
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    return args


def key_table(workload, keys, seed):
    """The sequence of key indices the loop walks, built before any timing.

    hot: one entry (index 0). uniform: TABLE_SIZE indices drawn uniformly from [0, keys).
    zipf: TABLE_SIZE indices drawn with P(i) proportional to 1 / (i + 1) (exponent 1.0),
    by binary search of a uniform draw in the cumulative weights (random.choices with
    cum_weights does exactly that). Arrays, not lists, keep the harness's own memory small
    (the peak RSS reported is mostly the limiter's).
    """
    if workload == "hot":
        return array("I", [0])
    rng = random.Random(seed)
    table = array("I")
    chunk = 1 << 16
    if workload == "uniform":
        for _ in range(TABLE_SIZE // chunk):
            table.extend(rng.randrange(keys) for _ in range(chunk))
        return table
    # zipf
    cum = array("d", itertools.accumulate(1.0 / k for k in range(1, keys + 1)))
    population = range(keys)
    for _ in range(TABLE_SIZE // chunk):
        table.extend(rng.choices(population, cum_weights=cum, k=chunk))
    return table


def closed_loop(hit, item, table, seconds, sample_every, samples):
    """Decides hits back to back for `seconds`; returns (decisions, allowed, elapsed_ns).

    Every `sample_every`-th call is timed (the library call only, not the key's
    formatting) and its latency in ns appended to `samples` (unless it is None). The
    deadline is checked after each timed call, so a run ends within one group of calls.
    """
    clock = time.perf_counter_ns  # monotonic, ns
    fmt = KEY_FORMAT
    mask = len(table) - 1  # the table's length is a power of two
    untimed = range(sample_every - 1)
    record = samples.append if samples is not None else None
    pos = decisions = allowed = 0
    start = clock()
    deadline = start + int(seconds * 1e9)
    while True:
        for _ in untimed:
            if hit(item, fmt % table[pos & mask]):
                allowed += 1
            pos += 1
        key = fmt % table[pos & mask]
        pos += 1
        t0 = clock()
        ok = hit(item, key)
        t1 = clock()
        if ok:
            allowed += 1
        if record is not None:
            record(t1 - t0)
        decisions += sample_every
        if t1 >= deadline:
            return decisions, allowed, t1 - start


def quantile(sorted_values, num, den):
    """Nearest-rank quantile num/den (in (0, 1]) of a sorted, non-empty sequence."""
    rank = -(-num * len(sorted_values) // den)  # ceil(n * num / den), exact
    return sorted_values[max(rank, 1) - 1]


def main(argv):
    args = parse_args(argv)

    if args.storage == "memory":
        storage = storage_from_string("memory://")
    else:
        storage = storage_from_string(args.redis_url)
        if not storage.check():
            sys.exit(f"limits_bench: cannot reach Redis at {args.redis_url}")
    strategy = {"fixed": FixedWindowRateLimiter, "moving": MovingWindowRateLimiter}
    limiter = strategy[args.algorithm](storage)
    # limits names a key after the rule only, not the strategy: a namespace per algorithm
    # keeps a moving-window run from finding the string keys a fixed-window run just left in
    # the same Redis (WRONGTYPE) before they expire.
    item = RateLimitItemPerSecond(LIMIT_PER_SECOND, 1, namespace=f"bench-{args.algorithm}")

    table = key_table(args.workload, args.keys, args.seed)
    setup_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    closed_loop(limiter.hit, item, table, WARMUP_SECONDS, args.sample_every, None)
    samples = array("q")
    decisions, allowed, elapsed_ns = closed_loop(
        limiter.hit, item, table, args.seconds, args.sample_every, samples
    )
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    lat = sorted(samples)
    seconds = elapsed_ns / 1e9
    result = {
        "system": "python-limits",
        "variant": f"{args.storage} {args.algorithm}",
        "workload": args.workload,
        "keys": args.keys,
        "seconds": round(seconds, 3),
        "decisions": decisions,
        "decisions_per_s": round(decisions / seconds, 1),
        "allowed": allowed,
        "denied": decisions - allowed,
        "p50_us": round(quantile(lat, 1, 2) / 1e3, 2),
        "p99_us": round(quantile(lat, 99, 100) / 1e3, 2),
        "timed_calls": len(lat),
        "sample_every": args.sample_every,
        "concurrency": 1,
        "setup_rss_kib": setup_rss_kib,
        "peak_rss_kib": peak_rss_kib,
        "versions": {
            "python": platform.python_version(),
            "limits": limits.__version__,
        },
        "cdf_us": [
            round(quantile(lat, i + 1, CDF_POINTS) / 1e3, 2)
            for i in range(CDF_POINTS)
        ],
    }
    if args.storage == "redis":
        import redis  # only needed (and only required) for the Redis storage

        result["versions"]["redis-py"] = redis.__version__
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv[1:])
