#!/usr/bin/env python3
"""make bench: every row of the performance targets (issue 5), ours and the peers side by side,
measured in the same run on this machine.

    tools/bench.py ENV2 [--reps 3] [--only SUBSTR[,SUBSTR..]] [--no-write]
                        [--python /usr/bin/python3] [--node node] [--ort-dir build/ort]

Per configuration, runs `env2 bench` and the peers in alternating processes, --reps processes per
engine, and takes the median of the per-process medians (min-max = range of those medians):
  * PyTorch: ../shared/bench/torch_bench.py under /usr/bin/python3 (Debian python3-torch).
    Inference: both "best setting" variants of ../shared/bench/PEERS.md (channels_last + jit
    trace+freeze, and jit trace+optimize_for_inference); the faster median is the peer figure.
    Training: channels_last.  Demo-model rows: tools/torch_demo_bench.py (the same architecture
    built by tools/torch_train_ref.py, AdamW, channels_last).
  * ONNX Runtime: onnxruntime-node from npm, installed on demand into --ort-dir by
    tools/get_ort.sh, models exported by tools/export_onnx.py, timed by ../shared/bench/ort_bench.js.
  * FP32 peak: ../shared/bench/peak_flops.c compiled and run at 1 and 2 threads at the start and
    at the end (the better "BEST zmm512" line of each); the GEMM row and the percentages use it.
  * Demo-model rows: the Makefile's DEMO_ARCH at the demo's sizes 32, 36, 40, batch 64, AdamW.
  * GEMM row: `env2 bench --gemm` (k_sgemm on the V2-S 1x1-convolution shapes at 384, batch 1).
  * Thread scaling: the 1-thread @384 row runs unpinned and pinned to each of the first two CPUs;
    the 2-thread median is compared with the fastest of those, and the row gives the most two CPUs
    of the measured speeds can give (1 + t_fast / t_slow).
A peer that is not installed is reported as such (with the reason) and its targets are not judged.
Writes the tables to docs/PERFORMANCE.md between the BENCH-BEGIN/BENCH-END markers (unless
--no-write), prints them, and keeps the raw JSON in build/bench_last.json.  Standard library only.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
TORCH_BENCH = os.path.join(SHARED, "torch_bench.py")
ORT_BENCH = os.path.join(SHARED, "ort_bench.js")
PEAK_SRC = os.path.join(SHARED, "peak_flops.c")
TORCH_DEMO = os.path.join(HERE, "torch_demo_bench.py")
FALLBACK_PEAK = {1: 272.0, 2: 546.0}  # GFLOP/s, ../shared/bench/PEERS.md (zmm, 1 and 2 threads)


def demo_arch():
    """DEMO_ARCH of the Makefile (what `make demo` trains), or the value it had when this was written."""
    try:
        with open(os.path.join(ROOT, "Makefile")) as f:
            for line in f:
                if line.startswith("DEMO_ARCH") and ":=" in line:
                    return line.split(":=", 1)[1].strip()
    except OSError:
        pass
    return "r1_k3_s1_e1_i24_o24_c1 r1_k3_s2_e4_i24_o48_c1 r1_k3_s1_e4_i48_o48 r2_k3_s2_e4_i48_o64_se0.25 r2_k3_s1_e4_i64_o96_se0.25"


DEMO_ARCH = demo_arch()
DEMO_SIZES = (32, 36, 40)  # the stage sizes of DEMO_FLAGS (--size-start 32 --size-end 40, multiple 4, 3 stages)
# the demo recipe's compute-side settings (Makefile DEMO_FLAGS): AdamW, wd 0.05, label smoothing 0.1,
# dropout up to 0.1, drop-path 0.1
DEMO_OURS = ["--arch", DEMO_ARCH, "--stem", "24", "--head", "256", "--in-channels", "1", "--classes", "10",
             "--batch", "64", "--train", "--optimizer", "adamw", "--wd", "0.05", "--label-smoothing", "0.1",
             "--dropout", "0.1", "--drop-path", "0.1", "--threads", "2", "--runs", "20", "--warmup", "3"]
DEMO_TORCH = ["--arch", DEMO_ARCH, "--batch", "64", "--steps", "20", "--warmup", "3", "--threads", "2", "--dropout", "0.1",
              "--drop-path", "0.1"]

TORCH_INFER_VARIANTS = [("channels_last + jit freeze", ["--channels-last", "--jit", "freeze"]),
                        ("jit optimize_for_inference", ["--jit", "ofi"])]


def s_infer(size, batch, threads, runs, warmup):
    return ["s", "--size", str(size), "--batch", str(batch), "--threads", str(threads), "--runs", str(runs),
            "--warmup", str(warmup)]


def t_infer(size, batch, steps, warmup):
    return ["--variant", "s", "--mode", "infer", "--batch", str(batch), "--size", str(size), "--steps", str(steps),
            "--warmup", str(warmup), "--threads", "2"]


# key, label, threads, ours args, peers: torch_infer / torch_train / torch_demo args, ort (model, batch, runs, warmup)
CONFIGS = [
    dict(key="i384", label="V2-S infer bs1 @384, 2 thr", threads=2, ours=s_infer(384, 1, 2, 10, 3),
         torch_infer=t_infer(384, 1, 10, 3), ort=("effv2s_384_b1", 1, 10, 3)),
    dict(key="i384_1t", label="V2-S infer bs1 @384, 1 thr", threads=1, ours=s_infer(384, 1, 1, 6, 2), pinned=True),
    dict(key="i224", label="V2-S infer bs1 @224, 2 thr", threads=2, ours=s_infer(224, 1, 2, 15, 3),
         torch_infer=t_infer(224, 1, 15, 3), ort=("effv2s_224_b1", 1, 15, 3)),
    dict(key="i224b8", label="V2-S infer bs8 @224, 2 thr", threads=2, ours=s_infer(224, 8, 2, 6, 2),
         torch_infer=t_infer(224, 8, 6, 2), ort=("effv2s_224_dyn", 8, 6, 2)),
    dict(key="t128", label="V2-S train bs32 @128, 2 thr", threads=2,
         ours=["s", "--train", "--size", "128", "--batch", "32", "--threads", "2", "--runs", "5", "--warmup", "2",
               "--optimizer", "sgd", "--wd", "0", "--label-smoothing", "0"],
         torch_train=["--variant", "s", "--mode", "train", "--batch", "32", "--size", "128", "--steps", "5",
                      "--warmup", "2", "--threads", "2", "--channels-last"]),
] + [
    dict(key="demo%d" % s, label="demo model train bs64 @%d, 2 thr" % s, threads=2, ours=DEMO_OURS + ["--size", str(s)],
         torch_demo=DEMO_TORCH + ["--size", str(s)]) for s in DEMO_SIZES
] + [
    dict(key="gemm", label="GEMM V2-S 1x1-conv shapes @384 bs1, 2 thr", threads=2,
         gemm=["--gemm", "--size", "384", "--batch", "1", "--threads", "2", "--runs", "20"]),
]


# ---- running ------------------------------------------------------------------------------------

def run_json(cmd, cwd=None, env=None, timeout=1800):
    """-> (last JSON line of stdout as a dict, None) or (None, error text)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line), None
            except ValueError:
                break
    return None, one_line((out.stderr or out.stdout or "exit status %d" % out.returncode).strip().splitlines()[-1:])


def one_line(x, n=160):
    if isinstance(x, list):
        x = " ".join(x)
    x = " ".join(str(x).split()).replace("|", "/")
    return x if len(x) <= n else x[:n - 1] + "…"


def torch_status(python):
    """-> (version string, None) or (None, reason)."""
    if not os.path.exists(TORCH_BENCH):
        return None, "%s missing" % TORCH_BENCH
    try:
        r = subprocess.run([python, "-c", "import torch, torchvision; print(torch.__version__, torchvision.__version__)"],
                           capture_output=True, text=True, timeout=300)
    except OSError as e:
        return None, "%s: %s" % (python, e.strerror or e)
    except subprocess.TimeoutExpired:
        return None, "importing torch timed out"
    if r.returncode:
        return None, one_line((r.stderr.strip().splitlines() or ["import torch failed"])[-1])
    v = r.stdout.split()
    return "torch %s, torchvision %s" % (v[0], v[1]), None


def ort_status(node, python, ort_dir, torch_ok):
    """Installs onnxruntime-node and exports the models when missing. -> (None) or reason."""
    if shutil.which(node) is None:
        return "node not found: %s" % node
    if not os.path.exists(ORT_BENCH):
        return "%s missing" % ORT_BENCH
    env = dict(os.environ, NODE=node)
    r = subprocess.run(["sh", os.path.join(HERE, "get_ort.sh"), ort_dir], capture_output=True, text=True, env=env)
    sys.stderr.write(r.stderr)
    if r.returncode:
        return one_line((r.stderr.strip().splitlines() or ["tools/get_ort.sh failed"])[-1])
    names = [m for m in ("effv2s_384_b1", "effv2s_224_b1", "effv2s_224_dyn")
             if not os.path.exists(os.path.join(ort_dir, m + ".onnx"))]
    if names:
        if not torch_ok:
            return "no .onnx models in %s and no PyTorch to export them" % ort_dir
        print("bench: exporting the ONNX models into %s" % ort_dir, file=sys.stderr, flush=True)
        r = subprocess.run([python, os.path.join(HERE, "export_onnx.py"), ort_dir], capture_output=True, text=True)
        if r.returncode:
            return "ONNX export failed: " + one_line((r.stderr.strip().splitlines() or ["?"])[-1])
    return None


def cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return any(l.startswith("flags") and " avx512f" in l for l in f)
    except OSError:
        return True  # not Linux: let the compile/run decide


def measure_peak(threads_list):
    """-> ({threads: GFLOP/s}, note, kind).  Compiles peak_flops.c into build/ and takes its BEST zmm512 line.

    On a CPU without AVX-512 the zmm loop cannot run, and the machine's peak is the 256-bit FMA one (the
    AVX2 kernels are what runs there): the program is compiled from a copy whose only change is that its
    loop over widths starts at the ymm256 pass, and its BEST ymm256 line is taken instead."""
    exe = os.path.join(ROOT, "build", "peak_flops")
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    cc = os.environ.get("CC_PEAK", "gcc")
    src, kind, flags = PEAK_SRC, "zmm512", ["-march=native"]
    if not cpu_has_avx512():
        kind, flags = "ymm256", ["-mavx2", "-mfma", "-mavx512f"]  # -mavx512f only so that the unused zmm code compiles
        try:
            with open(PEAK_SRC) as f:
                text = f.read()
            skip = text.replace("for (int w = 0; w < 2; w++)", "for (int w = 1; w < 2; w++)")
            if skip == text:
                raise OSError("peak_flops.c's width loop not found")
            src = os.path.join(ROOT, "build", "peak_flops_ymm.c")
            with open(src, "w") as f:
                f.write(skip)
        except OSError as e:
            return dict(FALLBACK_PEAK), "no AVX-512 and %s: PEERS.md's 272/546 GFLOP/s used" % one_line(e, 80), kind
    try:
        r = subprocess.run([cc, "-O2"] + flags + ["-fopenmp", src, "-o", exe], capture_output=True,
                           text=True, timeout=300)
        if r.returncode:
            raise OSError(one_line(r.stderr.strip().splitlines()[-1:] or "compile failed"))
    except (OSError, subprocess.TimeoutExpired) as e:
        return (dict(FALLBACK_PEAK), "peak_flops.c did not compile (%s): PEERS.md's 272/546 GFLOP/s used"
                % one_line(e, 80), kind)
    peak, bad = {}, []
    for t in threads_list:
        try:
            r = subprocess.run([exe, "100"], capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, OMP_NUM_THREADS=str(t)))
            line = [l for l in r.stdout.splitlines() if l.startswith("BEST %s threads=%d " % (kind, t))]
            peak[t] = float(line[0].split()[3])
        except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
            peak[t] = FALLBACK_PEAK[t]
            bad.append(t)
    note = "" if not bad else "peak_flops failed at %s thread(s): PEERS.md's figure used" % ",".join(map(str, bad))
    return peak, note, kind


def norm(engine, j):
    """Per-process result -> {ms, ips, rss, ...} in common units."""
    if engine == "ours":
        return dict(ms=j["median_ms"], ips=j["images_per_s"], rss=j["peak_rss_mib"], gflops=j["gflops"],
                     params=j.get("params"), raw=j)
    if engine == "gemm":
        return dict(gflops=j["gflops"], rss=j.get("peak_rss_mib"), raw=j)
    if engine.startswith("torch"):
        return dict(ms=j["median_s"] * 1e3, ips=j["img_per_s"], rss=j["maxrss_mib"], raw=j)
    return dict(ms=j["median_ms"], ips=j["img_per_s"], rss=j["maxrss_mib"], raw=j)  # ort


def summary(runs):
    if not runs:
        return None
    s = dict(n=len(runs), raw=[r["raw"] for r in runs])
    for k in ("ms", "ips", "rss", "gflops"):
        v = [r[k] for r in runs if r.get(k) is not None]
        if v:
            s[k], s[k + "_lo"], s[k + "_hi"] = statistics.median(v), min(v), max(v)
    s["rss_max"] = max((r["rss"] for r in runs if r.get("rss") is not None), default=None)
    s["params"] = runs[0].get("params")
    return s


# Runs argv[2:] on CPU argv[1] only.  The 1-thread row is also run pinned to each of two CPUs: on a
# shared machine one vCPU can be slower than the other for a while (a busy neighbour on its host
# core), and two CPUs whose 1-thread times are t_fast and t_slow can at best run 1 + t_fast/t_slow
# times faster together than the faster one alone.  Those times are each CPU's speed with the other
# idle; with both busy they can differ (docs/PERFORMANCE.md, session 19), so the bound is a guide.
PIN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); os.execv(sys.argv[2], sys.argv[2:])"


def pin_cpus():
    """The first two CPUs this process may run on, or none where there is only one (or no affinity API)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []
    return cpus[:2] if len(cpus) >= 2 else []


def run_config(c, a, env2, peers):
    """-> {engine: {"name", "summary", "error", "missing"}} for one configuration."""
    engines = []  # (engine key, display name, cmd, cwd, missing reason)
    if "gemm" in c:
        engines.append(("gemm", "ours (k_sgemm)", [env2, "bench"] + c["gemm"], None, None))
    else:
        engines.append(("ours", "ours", [env2, "bench"] + c["ours"], None, None))
        for cpu in pin_cpus() if c.get("pinned") else []:
            engines.append(("ours:cpu%d" % cpu, "ours, pinned to CPU %d" % cpu,
                            [sys.executable, "-c", PIN, str(cpu), env2, "bench"] + c["ours"], None, None))
    if "torch_infer" in c:
        for name, extra in TORCH_INFER_VARIANTS:
            engines.append(("torch:" + name, "PyTorch " + name, [a.python, TORCH_BENCH] + c["torch_infer"] + extra,
                            None, peers["torch"]))
    if "torch_train" in c:
        engines.append(("torch:channels_last", "PyTorch channels_last", [a.python, TORCH_BENCH] + c["torch_train"],
                        None, peers["torch"]))
    if "torch_demo" in c:
        engines.append(("torch:channels_last", "PyTorch channels_last (tools/torch_demo_bench.py)",
                        [a.python, TORCH_DEMO] + c["torch_demo"], None, peers["torch"]))
    if "ort" in c:
        name, batch, runs, warmup = c["ort"]
        engines.append(("ort", "ONNX Runtime (onnxruntime-node)",
                        [a.node, ORT_BENCH, name, str(batch), str(runs), str(warmup), str(c["threads"])],
                        a.ort_dir, peers["ort"]))
    res = {k: dict(name=n, runs=[], error=None, missing=miss) for k, n, _, _, miss in engines}
    for _rep in range(a.reps):
        for k, _, cmd, cwd, miss in engines:
            if miss:
                continue
            j, e = run_json(cmd, cwd=cwd)
            if j is None:
                res[k]["error"] = e
                print("bench: %s / %s failed: %s" % (c["label"], k, e), file=sys.stderr, flush=True)
                continue
            if k == "ort" and j.get("ref_max_abs") and j.get("max_abs_diff_vs_torch", 0) > 1e-2 * j["ref_max_abs"]:
                res[k]["error"] = "output differs from torch (max abs diff %.3g)" % j["max_abs_diff_vs_torch"]
            res[k]["runs"].append(norm(k.split(":")[0], j))
    for k, r in res.items():
        r["summary"] = summary(r["runs"])
        del r["runs"]
    return res


# ---- tables -------------------------------------------------------------------------------------

def f_ms(s):
    return "%.1f ms (%.1f–%.1f)" % (s["ms"], s["ms_lo"], s["ms_hi"])


def f_ips(s):
    return "%.1f img/s (%.1f–%.1f)" % (s["ips"], s["ips_lo"], s["ips_hi"])


def peer_cell(r, what):
    """Text for a peer engine (or best of its variants) in the targets table."""
    if r is None:
        return "—"
    if r.get("missing"):
        return "not installed"
    s = r.get("summary")
    if not s:
        return "failed: " + one_line(r.get("error") or "no result", 60)
    return what(s)


def best_torch(res):
    """Fastest PyTorch variant of a row (lowest median time) -> (engine dict with 'variant') or None."""
    cands = [(k, r) for k, r in res.items() if k.startswith("torch:")]
    if not cands:
        return None
    ok = [(k, r) for k, r in cands if r.get("summary")]
    if not ok:
        return cands[0][1]
    k, r = min(ok, key=lambda kr: kr[1]["summary"]["ms"])
    return dict(r, variant=k.split(":", 1)[1])


def status(cond):
    return "**met**" if cond else "not met"


def target_rows(R, peak):
    """The issue-5 table, judged from this run.  R: key -> engine results (absent when not run)."""
    rows = []

    def ours_of(key):
        return R[key]["ours"]["summary"] if key in R and R[key]["ours"].get("summary") else None

    def failed(key, engine="ours"):
        if key not in R:
            return "not measured"
        return "failed: " + one_line(R[key][engine].get("error") or "no result", 60)

    def peer_state(p):
        if p is None:
            return "not run"
        if p.get("missing"):
            return "not installed"
        if not p.get("summary"):
            return "failed"
        return None

    for key, what in (("i384", "inference V2-S bs1 @384"), ("i224", "inference V2-S bs1 @224")):
        goal = "latency ≤ 0.8× PyTorch and ≤ 1.0× ONNX Runtime"
        if key not in R:
            rows.append([what, "not measured", "", "", "", goal, "—"])
            continue
        o, t, x = ours_of(key), best_torch(R[key]), R[key].get("ort")
        tcell = peer_cell(t, lambda s: "%s, %s" % (f_ms(s), t["variant"]))
        xcell = peer_cell(x, f_ms)
        if not o:
            rows.append([what, failed(key), tcell, xcell, "", goal, "—"])
            continue
        ratios, st = [], []
        for p, name, lim in ((t, "PyTorch", 0.8), (x, "ORT", 1.0)):
            bad = peer_state(p)
            if bad:
                ratios.append("%s %s" % (name, bad))
                st.append(None)
            else:
                q = o["ms"] / p["summary"]["ms"]
                ratios.append("%.2f× %s" % (q, name))
                st.append(q <= lim)
        if False in st:
            verdict = "not met"
        elif None in st:
            verdict = "unknown (%s)" % ", ".join(r for r, v in zip(ratios, st) if v is None)
        else:
            verdict = status(True)
        rows.append([what, f_ms(o), tcell, xcell, "time: " + ", ".join(ratios), goal, verdict])

    what, goal = "inference V2-S bs8 @224", "throughput ≥ 1.1× ONNX Runtime"
    if "i224b8" not in R:
        rows.append([what, "not measured", "", "", "", goal, "—"])
    else:
        o, t, x = ours_of("i224b8"), best_torch(R["i224b8"]), R["i224b8"].get("ort")
        tcell = peer_cell(t, lambda s: "%s, %s" % (f_ips(s), t["variant"]))
        xcell = peer_cell(x, f_ips)
        bad = peer_state(x)
        if not o:
            rows.append([what, failed("i224b8"), tcell, xcell, "", goal, "—"])
        elif bad:
            rows.append([what, f_ips(o), tcell, xcell, "ORT " + bad, goal, "unknown (ORT %s)" % bad])
        else:
            q = o["ips"] / x["summary"]["ips"]
            rows.append([what, f_ips(o), tcell, xcell, "throughput %.2f× ORT" % q, goal, status(q >= 1.1)])

    def train_row(key, what, lim):
        goal = "images/s ≥ %g× PyTorch" % lim
        if key not in R:
            rows.append([what, "not measured", "", "—", "", goal, "—"])
            return
        o, t = ours_of(key), R[key].get("torch:channels_last")
        tcell = peer_cell(t, f_ips)
        bad = peer_state(t)
        if not o:
            rows.append([what, failed(key), tcell, "—", "", goal, "—"])
        elif bad:
            rows.append([what, f_ips(o), tcell, "—", "PyTorch " + bad, goal, "unknown (PyTorch %s)" % bad])
        else:
            q = o["ips"] / t["summary"]["ips"]
            rows.append([what, f_ips(o), tcell, "—", "throughput %.2f× PyTorch" % q, goal, status(q >= lim)])

    train_row("t128", "training V2-S bs32 @128", 1.25)
    for s in DEMO_SIZES:
        train_row("demo%d" % s, "training the Fashion-MNIST demo model, bs64 @%d" % s, 1.5)

    what, goal = "thread scaling, V2-S inference bs1 @384", "2 threads ≥ 1.8× faster than 1 thread"
    o2, o1 = ours_of("i384"), ours_of("i384_1t")
    if o2 and o1:
        # Judged against the fastest 1-thread time measured: an unpinned 1-thread process that the
        # scheduler put on the slower CPU would make the speed-up look larger than it is.
        pins = sorted((k, r["summary"]["ms"]) for k, r in R["i384_1t"].items()
                      if k.startswith("ours:cpu") and r.get("summary"))
        t1 = min([o1["ms"]] + [t for _, t in pins])
        q = t1 / o2["ms"]
        ours = "1 thr %.1f ms, 2 thr %.1f ms" % (o1["ms"], o2["ms"])
        note = ""
        if pins:
            ours += " (1 thr pinned: %s)" % ", ".join("%s %.1f ms" % (k.split(":")[1].replace("cpu", "CPU "), t)
                                                      for k, t in pins)
        if len(pins) == 2:
            fast, slow = min(t for _, t in pins), max(t for _, t in pins)
            note = "; two CPUs this fast can give at most %.2f× over the faster" % (1 + fast / slow)
        rows.append([what, ours, "—", "—", "speed-up %.2f× over the fastest 1-thread run%s" % (q, note), goal,
                     status(q >= 1.8)])
    else:
        rows.append([what, failed("i384") if not o2 else failed("i384_1t"), "—", "—", "", goal, "—"])

    what, goal = "peak memory, inference V2-S bs1 @384", "whole process ≤ weights + 64 MiB"
    o = ours_of("i384")
    if o:
        w = (o.get("params") or 21458488) * 4 / 2**20
        t, x = best_torch(R["i384"]), R["i384"].get("ort")
        rows.append([what, "%.0f MiB peak RSS" % o["rss_max"],
                     peer_cell(t, lambda s: "%.0f MiB" % s["rss_max"]), peer_cell(x, lambda s: "%.0f MiB" % s["rss_max"]),
                     "limit %.0f MiB (weights %.0f + 64)" % (w + 64, w), goal, status(o["rss_max"] <= w + 64)])
    else:
        rows.append([what, failed("i384"), "", "", "", goal, "—"])

    what, goal = "peak memory, training V2-S bs32 @128", "whole process ≤ 0.6× PyTorch's"
    o = ours_of("t128")
    if o:
        t = R["t128"].get("torch:channels_last")
        bad = peer_state(t)
        tcell = peer_cell(t, lambda s: "%.0f MiB" % s["rss_max"])
        if bad:
            rows.append([what, "%.0f MiB" % o["rss_max"], tcell, "—", "PyTorch " + bad, goal,
                         "unknown (PyTorch %s)" % bad])
        else:
            q = o["rss_max"] / t["summary"]["rss_max"]
            rows.append([what, "%.0f MiB" % o["rss_max"], tcell, "—", "RSS %.2f× PyTorch" % q, goal, status(q <= 0.6)])
    else:
        rows.append([what, failed("t128"), "", "—", "", goal, "—"])

    what, goal = "GEMM kernel at V2-S 1x1-conv shapes, 2 thr", "≥ 70% of the measured FP32 peak"
    g = R.get("gemm", {}).get("gemm", {}).get("summary")
    if g:
        q = g["gflops"] / peak[2]
        rows.append([what, "%.0f GFLOP/s (%.0f–%.0f)" % (g["gflops"], g["gflops_lo"], g["gflops_hi"]), "—", "—",
                     "%.0f%% of %.0f GFLOP/s" % (100 * q, peak[2]), goal, status(q >= 0.7)])
    else:
        rows.append([what, failed("gemm", "gemm"), "—", "—", "", goal, "—"])
    return rows


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def detail_rows(R, peak):
    rows = []
    for c in CONFIGS:
        if c["key"] not in R or c["key"] == "gemm":
            continue
        res = R[c["key"]]
        o = res["ours"].get("summary")
        flops = o["gflops"] * 1e9 * o["ms"] / 1e3 if o else None  # per run: the same work for every engine
        pk = peak[c["threads"]]
        for k, r in res.items():
            if r.get("missing"):
                rows.append([c["label"], r["name"], "not installed: " + one_line(r["missing"], 100), "", "", "", ""])
                continue
            s = r.get("summary")
            if not s:
                rows.append([c["label"], r["name"], "failed: " + one_line(r.get("error") or "no result", 100), "", "", "",
                             ""])
                continue
            gf = flops / (s["ms"] / 1e3) / 1e9 if flops else None
            note = " (%s)" % one_line(r["error"], 60) if r.get("error") else ""
            rows.append([c["label"], r["name"] + note, f_ms(s), "%.1f" % s["ips"],
                         "%.0f (%.0f%%)" % (gf, 100 * gf / pk) if gf else "", "%.0f MiB" % s["rss_max"], s["n"]])
    return rows


def gemm_rows(R, peak):
    g = R.get("gemm", {}).get("gemm", {}).get("summary")
    if not g:
        return []
    shapes = {}
    for j in g["raw"]:
        for sh in j["shapes"]:
            shapes.setdefault((sh["layer"], sh["M"], sh["N"], sh["K"], sh["count"]), []).append(sh["gflops"])
    rows = []
    for (layer, M, N, K, count), v in shapes.items():
        m = statistics.median(v)
        rows.append([layer, "%d×%d×%d" % (M, N, K), count, "%.0f (%.0f–%.0f)" % (m, min(v), max(v)),
                     "%.0f%%" % (100 * m / peak[2])])
    rows.append(["**all, weighted by count**", "", "", "%.0f (%.0f–%.0f)" % (g["gflops"], g["gflops_lo"], g["gflops_hi"]),
                 "%.0f%%" % (100 * g["gflops"] / peak[2])])
    return rows


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("env2")
    ap.add_argument("--reps", type=int, default=3, help="processes per engine and configuration")
    ap.add_argument("--only", default="", help="comma-separated substrings of the configuration labels to run "
                    "(labels: %s)" % "; ".join(c["label"] for c in CONFIGS))
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch + torchvision")
    ap.add_argument("--node", default="node", help="Node.js for the ONNX Runtime peer")
    ap.add_argument("--ort-dir", default=os.path.join(ROOT, "build", "ort"),
                    help="where onnxruntime-node and the .onnx models live (installed on demand)")
    a = ap.parse_args()
    a.ort_dir = os.path.abspath(a.ort_dir)
    env2 = os.path.abspath(a.env2)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    configs = [c for c in CONFIGS if not only or any(s in c["label"] for s in only)]
    if not configs:
        print("bench: --only %r matches no configuration" % a.only, file=sys.stderr)
        return 2

    t_start = time.time()
    load0 = os.getloadavg()[0]
    need_torch = any(k in c for c in configs for k in ("torch_infer", "torch_train", "torch_demo"))
    need_ort = any("ort" in c for c in configs)
    tv, terr = torch_status(a.python) if need_torch else (None, None)
    peers = {"torch": terr, "ort": None}
    if need_ort:
        peers["ort"] = ort_status(a.node, a.python, a.ort_dir, tv is not None)
    print("bench: PyTorch: %s; ONNX Runtime: %s" % (
        tv or ("not available (%s)" % terr if need_torch else "not needed"),
        ("ok" if not peers["ort"] else "not available (%s)" % peers["ort"]) if need_ort else "not needed"),
        file=sys.stderr, flush=True)
    peak, peak_note, peak_kind = measure_peak([1, 2])
    print("bench: measured FP32 peak: %.0f GFLOP/s (1 thread), %.0f GFLOP/s (2 threads)%s"
          % (peak[1], peak[2], "; " + peak_note if peak_note else ""), file=sys.stderr, flush=True)

    R = {}
    for c in configs:
        print("bench: %s ..." % c["label"], file=sys.stderr, flush=True)
        R[c["key"]] = run_config(c, a, env2, peers)
        brief = {}
        for k, r in R[c["key"]].items():
            brief[k] = {kk: vv for kk, vv in r.items() if kk != "summary" and vv is not None}
            brief[k].update({sk: sv for sk, sv in (r["summary"] or {}).items() if sk != "raw"})
        print(json.dumps({"label": c["label"], "results": brief}), flush=True)
    load1 = os.getloadavg()[0]
    # the peak again at the end; the better of the two (the machine is shared, load comes and goes)
    peak_end, note_end, _ = measure_peak([1, 2])
    if not note_end:
        peak = {t: max(peak[t], peak_end[t]) if not peak_note else peak_end[t] for t in peak}
        peak_note = ""
    print("bench: FP32 peak at the end: %.0f / %.0f GFLOP/s (1 / 2 threads); using %.0f / %.0f"
          % (peak_end[1], peak_end[2], peak[1], peak[2]), file=sys.stderr, flush=True)

    ort_v = None
    try:
        with open(os.path.join(a.ort_dir, "node_modules", "onnxruntime-node", "package.json")) as f:
            ort_v = json.load(f).get("version")
    except (OSError, ValueError):
        pass
    parts = ["Measured %s on %s (%s), %d process%s per engine and configuration, alternating; medians of "
             "per-process medians, min–max = range of those medians; load average %.1f at the start, %.1f at the end "
             "(this run took %.1f min)." % (time.strftime("%Y-%m-%d %H:%M"), os.uname().nodename,
                                            "`--only %s`" % a.only if only else "all rows",
                                            a.reps, "" if a.reps == 1 else "es", load0, load1, (time.time() - t_start) / 60),
             "FP32 peak measured in this run with `peak_flops.c` (best of its runs at the start and at the end): "
             "**%.0f GFLOP/s at 2 threads, %.0f at 1 thread**%s%s."
             % (peak[2], peak[1],
                "" if peak_kind == "zmm512" or peak_note else
                ", its 256-bit FMA figure: this CPU has no AVX-512, so the AVX2 kernels ran and the issue's "
                "AVX-512 figures (546 GFLOP/s) do not apply",
                " (" + peak_note + ")" if peak_note else ""),
             "Peers: PyTorch %s; ONNX Runtime %s." % (
                 ("(%s, %s)" % (tv, a.python) if tv else "not installed (%s)" % terr) if need_torch
                 else "not used by these rows",
                 (("onnxruntime-node %s" % ort_v if ort_v else "onnxruntime-node") if not peers["ort"] else
                  "not installed (%s)" % peers["ort"]) if need_ort else "not used by these rows")]
    stamp = " ".join(parts)
    trows = [r for r in target_rows(R, peak) if r[1] != "not measured"]  # --only leaves rows out
    t1 = md_table(["target (issue 5)", "ours", "PyTorch (best setting)", "ONNX Runtime", "ours / peer", "goal", "status"],
                  trows)
    dr = detail_rows(R, peak)
    t2 = md_table(["configuration", "engine / variant", "median (min–max)", "img/s", "GFLOP/s (% of peak)",
                   "peak RSS", "n"], dr) if dr else ""
    gr = gemm_rows(R, peak)
    t3 = md_table(["GEMM (layer)", "M×N×K", "count", "GFLOP/s (min–max)", "% of peak"], gr) if gr else ""
    block = stamp + "\n\n" + t1 + "\n"
    if t2:
        block += "\nAll measurements of this run (GFLOP/s from our MAC count; % of the peak at the row's thread " \
                 "count):\n\n" + t2 + "\n"
    if t3:
        block += "\n`env2 bench --gemm`: `k_sgemm` on the 1x1-convolution shapes of V2-S stages 4–6 and the head " \
                 "at 384×384, batch 1 (M = H·W, N = Cout, K = Cin; count = occurrences in one forward pass):\n\n" + t3 + "\n"
    print(block)
    try:
        os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
        with open(os.path.join(ROOT, "build", "bench_last.json"), "w") as f:
            json.dump({"peak": peak, "peak_note": peak_note, "torch": tv or terr, "ort": peers["ort"] or ort_v,
                       "results": R}, f, indent=1)
    except OSError:
        pass
    if not a.no_write:
        path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
        text = open(path).read() if os.path.exists(path) else "# Performance\n\n<!-- BENCH-BEGIN -->\n<!-- BENCH-END -->\n"
        b, e = text.find("<!-- BENCH-BEGIN -->"), text.find("<!-- BENCH-END -->")
        if b < 0 or e < 0:
            text += "\n<!-- BENCH-BEGIN -->\n<!-- BENCH-END -->\n"
            b, e = text.find("<!-- BENCH-BEGIN -->"), text.find("<!-- BENCH-END -->")
        text = text[:b] + "<!-- BENCH-BEGIN -->\n" + block + text[e:]
        with open(path, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
