#!/usr/bin/python3
"""Plots Limiter's cost per decision and the memory per key against the number of keys tracked.

    /usr/bin/python3 scripts/plot-scaling.py build/bench/scaling.jsonl docs/img/scaling.png

Reads the JSON lines of sluice_bench_scaling (scripts/bench-scaling.sh writes them). Three
panels, log x: ns per decision; the same divided by its cost on the fewest keys, with a dashed
level at 2 (the issue's bound); and bytes per key (resident memory growth, solid; the store's own
account, dashed). One colour per algorithm; solid lines decide one request at a time
(Limiter::decide, batch 1), dashed lines in batches (Limiter::decide_batch). Dotted verticals mark
where the store's tables outgrow one core's L2 (1 MiB) and the shared L3 (32 MiB). Rows written
before the batch option count as batch 1. Needs Debian's python3-matplotlib.
"""
import collections
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CACHES = (("L2 1 MiB", 1 << 20), ("L3 32 MiB", 32 << 20))


def series_label(algorithm, batch):
    return f"{algorithm}, decide" if batch == 1 else f"{algorithm}, decide_batch of {batch}"


def main(jsonl_path, png_path):
    runs = collections.defaultdict(list)  # (algorithm, batch) -> [row]
    with open(jsonl_path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                runs[(row["algorithm"], row.get("batch", 1))].append(row)
    fig, (cost, ratio, memory) = plt.subplots(1, 3, figsize=(18, 4.8))
    colours = {}
    for (algorithm, batch), rows in sorted(runs.items()):
        rows.sort(key=lambda r: r["keys"])
        keys = [r["keys"] for r in rows]
        ns = [r["ns_per_decision"] for r in rows]
        style = "o-" if batch == 1 else "s--"
        line, = cost.plot(keys, ns, style, color=colours.get(algorithm),
                          label=series_label(algorithm, batch))
        colours.setdefault(algorithm, line.get_color())
        ratio.plot(keys, [n / ns[0] for n in ns], style, color=colours[algorithm],
                   label=series_label(algorithm, batch))
        if batch != 1 and (algorithm, 1) in runs:
            continue  # memory does not depend on how decisions are batched: drawn once
        memory.plot(keys, [r["bytes_per_key_rss"] for r in rows], "o-", color=colours[algorithm],
                    label=f"{algorithm}: resident memory growth")
        memory.plot(keys, [r["bytes_per_key_store"] for r in rows], "s--",
                    color=colours[algorithm], label=f"{algorithm}: store's account")
    ratio.axhline(2, color="black", linestyle="--", linewidth=0.8, alpha=0.6,
                  label="2x (the issue's bound)")
    # Where the tables stop fitting a cache, at the store's measured bytes per key.
    per_key = [r["bytes_per_key_store"] for rows in runs.values() for r in rows]
    if per_key:
        bytes_per_key = sorted(per_key)[len(per_key) // 2]
        for name, size in CACHES:
            x = size / bytes_per_key
            for ax in (cost, ratio, memory):
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            cost.annotate(name, (x, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                          fontsize=8, color="grey", ha="right", va="top")
    cost.set_title("Limiter, memory store, one thread")
    cost.set_ylabel("ns per decision (median of 3 runs)")
    ratio.set_title("Cost against the same series on the fewest keys")
    ratio.set_ylabel("ns per decision / ns at the fewest keys")
    memory.set_title("Memory per tracked key (32-byte values)")
    memory.set_ylabel("bytes per key")
    for ax in (cost, ratio, memory):
        ax.set_xscale("log")
        ax.set_xlabel("keys tracked")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    cost.legend(fontsize=8, loc="lower right")
    ratio.legend(fontsize=8, loc="lower right")
    memory.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
