#!/usr/bin/python3
"""Plots what sluice instances admitted over time, from distributed_test's CSV.

    SLUICE_DISTRIBUTED_SECONDS=60 SLUICE_DISTRIBUTED_CSV=/tmp/calls.csv build/test/distributed_test
    /usr/bin/python3 scripts/plot-distributed.py /tmp/calls.csv docs/img/strong-admitted.png strong
    /usr/bin/python3 scripts/plot-distributed.py /tmp/calls.csv docs/img/eventual-admitted.png eventual

One panel per algorithm and store (for the given consistency: strong or eventual); each line is
the admitted rate (calls per second, over the last second, sampled every 100 ms) of one load
spread, against the limit. Needs Debian's python3-matplotlib.
"""
import collections
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LIMIT = 40  # per second, as in test/server/distributed_test.cc


def main(csv_path, png_path, mode):
    runs = collections.defaultdict(list)  # (store, spread, algorithm) -> [(ms, admitted)]
    with open(csv_path, newline="") as f:
        for store, spread, algorithm, ms, admitted in csv.reader(f):
            runs[(store, spread, algorithm)].append((int(ms), int(admitted)))
    stores = sorted({k[0] for k in runs if k[0].endswith(" " + mode)})
    algorithms = ["fixed_window", "sliding_window_log", "token_bucket"]
    fig, axes = plt.subplots(len(stores), len(algorithms), figsize=(15, 4 * len(stores)),
                             squeeze=False, sharey=True)
    for row, store in enumerate(stores):
        for col, algorithm in enumerate(algorithms):
            ax = axes[row][col]
            for spread, style in (("uniform", "-"), ("skewed", "--")):
                calls = runs.get((store, spread, algorithm))
                if not calls:
                    continue
                end = max(ms for ms, _ in calls)
                admitted_at = sorted(ms for ms, a in calls if a)
                xs, ys = [], []
                lo = 0
                for t in range(1000, end + 1, 100):
                    while lo < len(admitted_at) and admitted_at[lo] <= t - 1000:
                        lo += 1
                    hi = lo
                    while hi < len(admitted_at) and admitted_at[hi] <= t:
                        hi += 1
                    xs.append(t / 1000)
                    ys.append(hi - lo)
                ax.plot(xs, ys, style, label=f"{spread} spread")
            ax.axhline(LIMIT, color="red", linewidth=1, label=f"limit ({LIMIT}/s)")
            name = algorithm
            if mode == "eventual" and algorithm == "sliding_window_log":
                name += " (counter form)"
            ax.set_title(f"{store}: {name}")
            ax.set_xlabel("seconds")
            if col == 0:
                ax.set_ylabel("admitted in the last second")
            ax.set_ylim(0, LIMIT * 2.2)
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"4 sluice instances, {mode} consistency, 3x offered load: admitted rate over time")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("strong", "eventual"):
        sys.exit("usage: plot-distributed.py CALLS.csv OUT.png strong|eventual")
    main(sys.argv[1], sys.argv[2], sys.argv[3])
