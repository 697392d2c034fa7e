#!/usr/bin/env python3
"""make bench: our speed next to PyTorch's, measured in the same run on this machine.

For each configuration, alternates runs of `env2 bench` and ../shared/bench/torch_bench.py (when
/usr/bin/python3 has torch), takes the median of the per-process medians, and writes a markdown table
to docs/PERFORMANCE.md between the BENCH-BEGIN/BENCH-END markers (and prints it).
Standard library only; PyTorch is optional.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_BENCH = os.path.join(ROOT, "..", "shared", "bench", "torch_bench.py")
PEAK = 546.0  # GFLOP/s, 2 threads, ../shared/bench/PEERS.md

# (label, env2 args, torch args)
CONFIGS = [
    ("V2-S infer bs1 @384, 2 thr", ["s", "--size", "384", "--batch", "1", "--threads", "2", "--runs", "10"],
     ["--variant", "s", "--mode", "infer", "--batch", "1", "--size", "384", "--steps", "10", "--channels-last", "--jit", "freeze"]),
    ("V2-S infer bs1 @384, 1 thr", ["s", "--size", "384", "--batch", "1", "--threads", "1", "--runs", "6"],
     ["--variant", "s", "--mode", "infer", "--batch", "1", "--size", "384", "--steps", "6", "--threads", "1", "--channels-last", "--jit", "freeze"]),
    ("V2-B0 infer bs1 @224, 2 thr", ["b0", "--size", "224", "--batch", "1", "--threads", "2", "--runs", "20"], None),
    ("V2-B0 infer bs1 @224, 1 thr", ["b0", "--size", "224", "--batch", "1", "--threads", "1", "--runs", "20"], None),
    ("V2-S infer bs1 @224, 2 thr", ["s", "--size", "224", "--batch", "1", "--threads", "2", "--runs", "15"],
     ["--variant", "s", "--mode", "infer", "--batch", "1", "--size", "224", "--steps", "15", "--channels-last", "--jit", "freeze"]),
    ("V2-S infer bs8 @224, 2 thr", ["s", "--size", "224", "--batch", "8", "--threads", "2", "--runs", "5"],
     ["--variant", "s", "--mode", "infer", "--batch", "8", "--size", "224", "--steps", "5", "--channels-last", "--jit", "freeze"]),
    ("V2-S train bs32 @128, 2 thr", ["s", "--train", "--size", "128", "--batch", "32", "--threads", "2", "--runs", "3", "--warmup", "1"],
     ["--variant", "s", "--mode", "train", "--batch", "32", "--size", "128", "--steps", "3", "--warmup", "1", "--channels-last"]),
    ("V2-S train bs16 @192, 2 thr", ["s", "--train", "--size", "192", "--batch", "16", "--threads", "2", "--runs", "3", "--warmup", "1"],
     ["--variant", "s", "--mode", "train", "--batch", "16", "--size", "192", "--steps", "3", "--warmup", "1", "--channels-last"]),
    ("V2-S train bs64 @32, 10 cls, 2 thr", ["s", "--train", "--size", "32", "--batch", "64", "--classes", "10", "--threads", "2", "--runs", "5", "--warmup", "2"],
     ["--variant", "s", "--mode", "train", "--batch", "64", "--size", "32", "--num-classes", "10", "--steps", "5", "--warmup", "2", "--channels-last"]),
]


def run_json(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line), None
    return None, (out.stderr or out.stdout)[-400:]


def have_torch():
    try:
        r = subprocess.run(["/usr/bin/python3", "-c", "import torch, torchvision"], capture_output=True, timeout=120)
        return r.returncode == 0 and os.path.exists(TORCH_BENCH)
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("env2")
    ap.add_argument("--reps", type=int, default=3, help="processes per engine and configuration")
    ap.add_argument("--only", default="", help="substring filter on the configuration label")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch_ok = have_torch()
    rows = []
    for label, ours, theirs in CONFIGS:
        if a.only and a.only not in label:
            continue
        mine, peer, err = [], [], ""
        for _ in range(a.reps):
            j, e = run_json([a.env2, "bench"] + ours)
            if j:
                mine.append(j)
            else:
                err = e
            if theirs and torch_ok:
                j, e = run_json(["/usr/bin/python3", TORCH_BENCH] + theirs)
                if j:
                    peer.append(j)
        row = {"label": label}
        if mine:
            row["ours_ms"] = statistics.median(j["median_ms"] for j in mine)
            row["ours_min"] = min(j["median_ms"] for j in mine)
            row["ours_max"] = max(j["median_ms"] for j in mine)
            row["ours_ips"] = statistics.median(j["images_per_s"] for j in mine)
            row["ours_gflops"] = statistics.median(j["gflops"] for j in mine)
            row["ours_rss"] = max(j["peak_rss_mib"] for j in mine)
        else:
            row["error"] = err
        if peer:
            row["torch_ms"] = statistics.median(j["median_s"] for j in peer) * 1e3
            row["torch_ips"] = statistics.median(j["img_per_s"] for j in peer)
            row["torch_rss"] = max(j["maxrss_mib"] for j in peer)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = ["| configuration | ours median (min–max) | ours img/s | GFLOP/s (% of 546) | ours peak RSS | PyTorch median | PyTorch img/s | PyTorch peak RSS | time ours / PyTorch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ours_ms" not in r:
            lines.append("| %s | failed: %s | | | | | | | |" % (r["label"], r.get("error", "").replace("\n", " ")[:80]))
            continue
        t = r.get("torch_ms")
        lines.append("| %s | %.1f ms (%.1f–%.1f) | %.1f | %.0f (%.0f%%) | %.0f MiB | %s | %s | %s | %s |" % (
            r["label"], r["ours_ms"], r["ours_min"], r["ours_max"], r["ours_ips"], r["ours_gflops"],
            100 * r["ours_gflops"] / PEAK, r["ours_rss"],
            "%.1f ms" % t if t else ("no peer row" if not torch_ok else "—"),
            "%.1f" % r["torch_ips"] if t else "", "%.0f MiB" % r["torch_rss"] if t else "",
            "%.2f" % (r["ours_ms"] / t) if t else ""))
    table = "\n".join(lines)
    stamp = "Measured %s on %s, %d processes per engine, alternating; medians of per-process medians.%s" % (
        time.strftime("%Y-%m-%d %H:%M"), os.uname().nodename, a.reps,
        "" if torch_ok else " PyTorch not installed: no peer figures.")
    print(table)
    if not a.no_write:
        path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
        text = open(path).read() if os.path.exists(path) else "# Performance\n\n<!-- BENCH-BEGIN -->\n<!-- BENCH-END -->\n"
        b, e = text.find("<!-- BENCH-BEGIN -->"), text.find("<!-- BENCH-END -->")
        if b < 0 or e < 0:
            text += "\n<!-- BENCH-BEGIN -->\n<!-- BENCH-END -->\n"
            b, e = text.find("<!-- BENCH-BEGIN -->"), text.find("<!-- BENCH-END -->")
        text = text[:b] + "<!-- BENCH-BEGIN -->\n" + stamp + "\n\n" + table + "\n" + text[e:]
        open(path, "w").write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
