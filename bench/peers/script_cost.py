#!/usr/bin/python3
"""Redis's own time per decision of sluice's decide script, and of variants of it.

    /usr/bin/python3 bench/peers/script_cost.py --port 6379 \
        current=src/storage/redis/script.cc variant=/tmp/variant.lua

Each script (a .cc file holding it between R"lua( and )lua", or a plain .lua file) is loaded
and driven the way the Redis store drives it: calls of --batch fixed-window requests (limit
100 per second, one hit each, keys drawn uniformly from --keys), --depth calls pipelined, for
--seconds per round. Between rounds Redis is flushed and its statistics reset; the figure is
`INFO commandstats`' EVALSHA time (which includes the GET and SET the script runs) over the
decisions made. Rounds alternate among the scripts, and the median of each is printed.
"""
import argparse
import random
import statistics
import struct
import time

import redis


def load(path):
    text = open(path).read()
    if 'R"lua(' in text:
        return text[text.index('R"lua(') + 6:text.index(')lua"')]
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--batch", type=int, default=8, help="requests per script call")
    p.add_argument("--depth", type=int, default=16, help="calls pipelined")
    p.add_argument("--keys", type=int, default=100000)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("scripts", nargs="+", metavar="NAME=FILE")
    a = p.parse_args()
    r = redis.Redis(host="127.0.0.1", port=a.port)
    shas = {}
    for spec in a.scripts:
        name, path = spec.split("=", 1)
        shas[name] = r.script_load(load(path))
    rng = random.Random(1)
    keys = ["sluice:{%016x}:k" % i for i in range(a.keys)]
    window = 1_000_000.0
    # One request: now (µs), m = 1, then the hit: fixed window, n, W, burst, cost, enforce.
    hit = struct.pack("<dddddd", 0, 100, window, 0, 1, 1)
    results = {name: [] for name in shas}
    now = 1.7e15
    for rnd in range(a.rounds):
        for name, sha in shas.items():
            r.flushall()
            r.config_resetstat()
            decisions, start = 0, time.time()
            while time.time() - start < a.seconds:
                pipe = r.pipeline(transaction=False)
                for _ in range(a.depth):
                    argv = [b"60"] + [struct.pack("<dd", now, 1) + hit for _ in range(a.batch)]
                    pipe.evalsha(sha, a.batch, *rng.choices(keys, k=a.batch), *argv)
                    now += 100
                pipe.execute()
                decisions += a.depth * a.batch
            usec = r.info("commandstats")["cmdstat_evalsha"]["usec"]
            results[name].append(usec / decisions)
            print("round %d  %-12s %.2f us/decision  (%d decisions)" % (rnd + 1, name, usec / decisions, decisions), flush=True)
    for name, v in results.items():
        print("%-12s median %.2f us/decision" % (name, statistics.median(v)))


if __name__ == "__main__":
    main()
