#!/usr/bin/python3
"""Tables and plots of a `make bench-peers` run (bench/peers/run.sh).

    /usr/bin/python3 bench/peers/report.py RESULTS.jsonl [--docs docs/benchmarks.md] [--img docs/img]

Prints the tables as Markdown. With --docs, replaces the part of that file between the markers
`<!-- peers:begin -->` and `<!-- peers:end -->` with them; with --img, draws
peers-throughput.png (decisions/s per system and workload) and peers-latency.png (the latency
CDF of the library paths) there, with Debian's python3-matplotlib. With several rounds, every
figure is the median of the rounds.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

WORKLOADS = ["hot", "uniform", "zipf"]
WORKLOAD_NAMES = {"hot": "1 hot key", "uniform": "100k keys uniform", "zipf": "1M keys Zipf"}

# Each library peer and the sluice variant it is compared with (the same storage, the same
# algorithm where the peer has it).
LIBRARY_PAIRS = [
    (("python-limits", "memory fixed"), ("sluice", "library memory fixed")),
    (("python-limits", "memory moving"), ("sluice", "library memory moving")),
    (("rate-limiter-flexible", "memory"), ("sluice", "library memory fixed")),
    (("python-limits", "redis fixed"), ("sluice", "library redis fixed")),
    (("python-limits", "redis moving"), ("sluice", "library redis fixed")),
    (("rate-limiter-flexible", "redis"), ("sluice", "library redis fixed")),
]
SERVICE_PAIRS = [
    (("noop", "server gRPC (ceiling)"), ("sluice", "server gRPC")),
    (("noop", "server HTTP /v1/authz (ceiling)"), ("sluice", "server HTTP /v1/authz")),
    (("nginx", "limit_req HTTP"), ("sluice", "server HTTP /v1/authz")),
]


def load(path):
    runs = defaultdict(list)
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        runs[(d["system"], d["variant"], d["workload"])].append(d)
    merged = {}
    for key, ds in runs.items():
        m = dict(ds[0])
        for field in ("decisions_per_s", "p50_us", "p99_us", "peak_rss_kib"):
            values = [d[field] for d in ds if d.get(field) is not None]
            if values:
                m[field] = statistics.median(values)
        m["rounds"] = len(ds)
        merged[key] = m
    return merged


def fmt_rate(v):
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:,.1f} k"


def fmt_us(v):
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:,.0f}"


def fmt_mib(kib):
    return "–" if not kib else f"{kib / 1024:,.0f}"


def table(rows, title_cols):
    out = ["| " + " | ".join(title_cols) + " |", "|" + "---|" * len(title_cols)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def versions(results):
    seen = {}
    for d in results.values():
        for name, v in (d.get("versions") or {}).items():
            seen[name] = v
    try:
        seen["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        seen["redis"] = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].split("=")[-1]
    except (OSError, IndexError):
        pass
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))


def report(results):
    parts = []
    parts.append(f"Machine: {machine()}. Versions: {versions(results)}.")
    # Every system, every workload.
    for kind, title in (("library", "Library paths"), ("service", "Service paths")):
        rows = []
        for (system, variant, workload), d in sorted(results.items(), key=lambda kv: (WORKLOADS.index(kv[0][2]), kv[0][0] != "sluice", kv[0][0], kv[0][1])):
            service = variant.startswith("server") or system in ("noop", "nginx")
            if (kind == "service") != service:
                continue
            rows.append([
                WORKLOAD_NAMES[workload],
                f"**{system}**" if system == "sluice" else system,
                variant,
                fmt_rate(d["decisions_per_s"]),
                fmt_us(d.get("p50_us")),
                fmt_us(d.get("p99_us")),
                fmt_mib(d.get("peak_rss_kib")),
            ])
        if rows:
            parts.append(f"### {title}\n\n" + table(rows, ["workload", "system", "variant", "decisions/s", "p50 µs", "p99 µs", "peak RSS MiB"]))
    # Ratios.
    rows = []
    for pairs in (LIBRARY_PAIRS, SERVICE_PAIRS):
        for peer, ours in pairs:
            for w in WORKLOADS:
                p = results.get(peer + (w,))
                s = results.get(ours + (w,))
                if not p or not s or not p.get("decisions_per_s"):
                    continue
                ratio = s["decisions_per_s"] / p["decisions_per_s"]
                ceiling = "ceiling" in peer[1]
                target = 0.85 if ceiling else (5.0 if pairs is LIBRARY_PAIRS else None)
                met = "" if target is None else (" ✓" if ratio >= target else " ✗")
                shown = f"{ratio:.1%}" if ceiling else f"{ratio:.1f}×"
                rows.append([WORKLOAD_NAMES[w], f"sluice {ours[1]}", f"{peer[0]} {peer[1]}", shown + met])
    # The eventual store against the Redis peers and the Redis ceiling.
    for w in WORKLOADS:
        s = results.get(("sluice", "library eventual fixed", w))
        c = results.get(("redis", "decide script (ceiling)", w))
        r = results.get(("sluice", "library redis fixed", w))
        if s and c:
            rows.append([WORKLOAD_NAMES[w], "sluice library eventual fixed", "Redis decide script (ceiling)", f"{s['decisions_per_s'] / c['decisions_per_s']:.1f}×"])
        if r and c:
            ratio = r["decisions_per_s"] / c["decisions_per_s"]
            # The ceiling is one request per script call. sluice passes it by sending the requests
            # that wait while a call is out as one call, and on a hot key by not asking Redis at
            # all (the over-limit cache).
            shown = f"{ratio:.1%}" if ratio < 2 else f"{ratio:.1f}×"
            shown += " ✓" if ratio >= 0.85 else " ✗"
            rows.append([WORKLOAD_NAMES[w], "sluice library redis fixed", "Redis decide script (ceiling)", shown])
    if rows:
        parts.append("### sluice against each peer\n\nTargets: 5× each library peer on the same workload and storage; 85 % of a ceiling (✓ met, ✗ not).\n\n" + table(rows, ["workload", "sluice", "against", "ratio"]))
    return "\n\n".join(parts) + "\n"


def plots(results, img):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(img, exist_ok=True)
    systems = sorted({(s, v) for (s, v, _w) in results}, key=lambda sv: (sv[0] != "sluice", sv[0], sv[1]))
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(16, 7), sharex=True)
    for ax, w in zip(axes, WORKLOADS):
        names, values, colors = [], [], []
        for s, v in systems:
            d = results.get((s, v, w))
            if not d:
                continue
            names.append(f"{s}: {v}")
            values.append(d["decisions_per_s"])
            colors.append("tab:blue" if s == "sluice" else ("tab:gray" if s in ("noop", "redis") else "tab:orange"))
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(names), fontsize=7)
        if ax is not axes[0]:
            ax.set_yticklabels(names, fontsize=7)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(WORKLOAD_NAMES[w])
        ax.set_xlabel("decisions/s (log)")
    fig.suptitle("sluice (blue) against the peers (orange) and the ceilings (gray), same machine, same run")
    fig.tight_layout()
    fig.savefig(os.path.join(img, "peers-throughput.png"), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(16, 5), sharey=True)
    for ax, w in zip(axes, WORKLOADS):
        for s, v in systems:
            d = results.get((s, v, w))
            if not d or not d.get("cdf_us"):
                continue
            cdf = d["cdf_us"]
            qs = [(i + 1) / len(cdf) for i in range(len(cdf))]
            ax.plot(cdf, qs, label=f"{s}: {v}", linewidth=2 if s == "sluice" else 1)
        ax.set_xscale("log")
        ax.set_title(WORKLOAD_NAMES[w])
        ax.set_xlabel("latency of one decision, µs (log)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("fraction of decisions")
    # The legend goes on the last panel that has lines (a smoke run has no Zipf panel).
    drawn = [ax for ax in axes if ax.get_lines()]
    if drawn:
        drawn[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Library paths: latency CDF")
    fig.tight_layout()
    fig.savefig(os.path.join(img, "peers-latency.png"), dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--docs", help="Markdown file whose peers section is replaced")
    ap.add_argument("--img", help="directory for the PNG plots")
    a = ap.parse_args()
    results = load(a.results)
    if not results:
        sys.exit("report.py: no results in " + a.results)
    text = report(results)
    print(text)
    if a.docs:
        begin, end = "<!-- peers:begin -->", "<!-- peers:end -->"
        doc = open(a.docs).read()
        if begin not in doc or end not in doc:
            sys.exit(f"report.py: {a.docs} has no {begin} ... {end} section")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        open(a.docs, "w").write(head + begin + "\n" + text + end + tail)
    if a.img:
        plots(results, a.img)


if __name__ == "__main__":
    main()
