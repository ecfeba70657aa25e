#!/usr/bin/python3
"""Plots Limiter::decide's cost and the memory per key against the number of keys tracked.

    /usr/bin/python3 scripts/plot-scaling.py build/bench/scaling.jsonl docs/img/scaling.png

Reads the JSON lines of sluice_bench_scaling (scripts/bench-scaling.sh writes them). Two panels,
log x: ns per decision, and bytes per key (resident memory growth, solid; the store's own
account, dashed), one line per algorithm; a dashed level at twice each algorithm's cost on the
fewest keys (the issue's bound). Dotted verticals mark where the store's tables outgrow one
core's L2 (1 MiB) and the shared L3 (32 MiB). Needs Debian's python3-matplotlib.
"""
import collections
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CACHES = (("L2 1 MiB", 1 << 20), ("L3 32 MiB", 32 << 20))


def main(jsonl_path, png_path):
    runs = collections.defaultdict(list)  # algorithm -> [row]
    with open(jsonl_path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                runs[row["algorithm"]].append(row)
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(13, 4.8))
    for algorithm, rows in sorted(runs.items()):
        rows.sort(key=lambda r: r["keys"])
        keys = [r["keys"] for r in rows]
        line, = cost.plot(keys, [r["ns_per_decision"] for r in rows], "o-", label=algorithm)
        cost.axhline(2 * rows[0]["ns_per_decision"], color=line.get_color(), linestyle="--",
                     linewidth=0.8, alpha=0.6, label=f"{algorithm}: 2x its cost at {keys[0]:,} keys")
        memory.plot(keys, [r["bytes_per_key_rss"] for r in rows], "o-", color=line.get_color(),
                    label=f"{algorithm}: resident memory growth")
        memory.plot(keys, [r["bytes_per_key_store"] for r in rows], "s--",
                    color=line.get_color(), label=f"{algorithm}: store's account")
    # Where the tables stop fitting a cache, at the store's measured bytes per key.
    per_key = [r["bytes_per_key_store"] for rows in runs.values() for r in rows]
    if per_key:
        bytes_per_key = sorted(per_key)[len(per_key) // 2]
        for name, size in CACHES:
            x = size / bytes_per_key
            for ax in (cost, memory):
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            cost.annotate(name, (x, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                          fontsize=8, color="grey", ha="right", va="top")
    cost.set_title("Limiter::decide, memory store, one thread")
    cost.set_ylabel("ns per decision (median of 3 runs)")
    memory.set_title("Memory per tracked key (32-byte values)")
    memory.set_ylabel("bytes per key")
    for ax in (cost, memory):
        ax.set_xscale("log")
        ax.set_xlabel("keys tracked")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    cost.legend(fontsize=8, loc="lower right")
    memory.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
