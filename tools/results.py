#!/usr/bin/env python3
"""make results: the comparison runs of docs/RESULTS.md, their summary table and plot.

    tools/results.py --env2 ./env2 --recipe "<env2 train options>" [--fixed-reg "<overrides>"]
                     [--seeds 1,2] [--fixed-reg-seeds 1] [--jobs 2] [--out runs/results] [--only NAME,...] [--torch]

Runs (each an `env2 train` with the recipe plus):
  prog_sN     the recipe as given (progressive learning), seed N
  fixed_sN    --progressive off: every epoch at the final image size with the final regularization
  fixedeq_s1  --progressive off --epochs F (with --fixed-epochs F): the fixed-size run given about the
              progressive run's wall time, with its own warm-up and cosine schedule
  fixreg_sN   progressive image size, regularization fixed at its final value (--fixed-reg options)
  torch_s1    tools/torch_train_ref.py with the same recipe (only with --torch and when
              /usr/bin/python3 has torch)
--jobs J runs J trainings at a time with 2/J threads each (pairs share the machine evenly, so
wall times within one batch compare fairly); a run left alone in the last batch gets 2 threads.  A run whose metrics.jsonl already has every epoch
and whose command.txt records the same command is not repeated (delete its directory to redo it).  Prints a markdown table of final accuracy
and wall time (mean over seeds) and a table of every run's test top-1 per epoch, copies every finished run's metrics.jsonl and command into --keep
(docs/results/latest/NAME.jsonl and NAME.cmd) and draws the accuracy-vs-time and accuracy-vs-epoch plots
there with tools/plot_metrics.py.  The dated sets that docs/RESULTS.md cites (docs/results/*.jsonl of
session 6, docs/results/s8/ ...) and its plots in docs/ are never overwritten by default.
Standard library only.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_PY = "/usr/bin/python3"


def epochs_of(recipe):
    a = shlex.split(recipe)
    for i, t in enumerate(a):
        if t == "--epochs" and i + 1 < len(a):
            return int(a[i + 1])
    return 10


def read_metrics(path):
    recs = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
    except OSError:
        pass
    return recs


def have_torch():
    try:
        return subprocess.run([TORCH_PY, "-c", "import torch, torchvision, numpy"], capture_output=True,
                              timeout=120).returncode == 0
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env2", default=os.path.join(ROOT, "env2"))
    ap.add_argument("--recipe", required=True, help="env2 train options of the recipe (no --out/--seed/--threads)")
    ap.add_argument("--fixed-reg", default="", help="options that pin every regularizer at its final value")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--fixed-reg-seeds", default="1", help="seeds of the fixreg runs")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "results"))
    ap.add_argument("--only", default="", help="comma-separated run names to (re)run, e.g. prog_s1,fixed_s1")
    ap.add_argument("--fixed-epochs", type=int, default=0,
                    help="also run fixedeq_s1: the fixed-size run with this many epochs (its own warm-up and "
                         "cosine), sized to take the progressive run's wall time")
    ap.add_argument("--torch", action="store_true", help="also run the PyTorch reference (seed 1)")
    latest = os.path.join(ROOT, "docs", "results", "latest")
    ap.add_argument("--plot", default=os.path.join(latest, "accuracy_vs_time.png"))
    ap.add_argument("--plot-epoch", default=os.path.join(latest, "accuracy_vs_epoch.png"))
    ap.add_argument("--keep", default=latest,
                    help="copy each finished run's metrics.jsonl and command.txt here as NAME.jsonl / NAME.cmd "
                         "(move them next to the dated sets of docs/results/ once docs/RESULTS.md cites them); "
                         "'' for no copy")
    a = ap.parse_args()

    seeds = [int(s) for s in a.seeds.split(",") if s]
    jobs = max(1, a.jobs)
    threads = max(1, 2 // jobs)
    epochs = epochs_of(a.recipe)
    base = shlex.split(a.recipe)
    runs = []  # (name, argv)
    run_epochs = {}
    for s in seeds:
        runs.append(("prog_s%d" % s, [a.env2, "train"] + base + ["--seed", str(s)]))
        runs.append(("fixed_s%d" % s, [a.env2, "train"] + base + ["--progressive", "off", "--seed", str(s)]))
    if a.fixed_reg:
        for s in [int(x) for x in a.fixed_reg_seeds.split(",") if x]:
            runs.append(("fixreg_s%d" % s, [a.env2, "train"] + base + shlex.split(a.fixed_reg) + ["--seed", str(s)]))
    if a.fixed_epochs > 0:
        runs.append(("fixedeq_s1", [a.env2, "train"] + base +
                     ["--progressive", "off", "--epochs", str(a.fixed_epochs), "--seed", "1"]))
        run_epochs["fixedeq_s1"] = a.fixed_epochs
    if a.torch:
        if have_torch():
            runs.append(("torch_s1", [TORCH_PY, os.path.join(HERE, "torch_train_ref.py")] + base + ["--seed", "1"]))
        else:
            print("results: /usr/bin/python3 has no torch/torchvision/numpy: no PyTorch run", file=sys.stderr)
    only = set(x for x in a.only.split(",") if x)
    os.makedirs(a.out, exist_ok=True)

    def recorded_command(d):
        try:
            with open(os.path.join(d, "command.txt")) as f:
                return f.read().strip()
        except OSError:
            return None

    todo = []
    for name, argv in runs:
        d = os.path.join(a.out, name)
        # a finished run counts only if it ran this very command: a changed
        # recipe (or binary path) makes it stale
        done = (len(read_metrics(os.path.join(d, "metrics.jsonl"))) >= run_epochs.get(name, epochs) and
                recorded_command(d) == shlex.join(argv))
        if (only and name in only) or (not only and not done):
            todo.append((name, argv, argv + ["--out", d, "--overwrite", "--quiet"]))
    # run in batches of `jobs`, pairing runs of equal length where possible
    failed = []
    for i in range(0, len(todo), jobs):
        batch = todo[i:i + jobs]
        # a run left alone in the last batch gets the whole machine
        nthr = str(threads if len(batch) > 1 else 2)
        procs = []
        for name, cmd, argv in batch:
            argv = argv + ["--threads", nthr]
            d = os.path.join(a.out, name)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "command.txt"), "w") as f:
                f.write(shlex.join(cmd) + "\n")
            log = open(os.path.join(a.out, name + ".log"), "w")
            print("results: %s  %s" % (time.strftime("%H:%M:%S"), " ".join(shlex.quote(x) for x in argv)), flush=True)
            procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
        for name, p, log in procs:
            rc = p.wait()
            log.close()
            if rc != 0:
                failed.append(name)
                print("results: %s failed (exit %d), see %s.log" % (name, rc, os.path.join(a.out, name)),
                      file=sys.stderr)

    # summary
    groups = {}
    curves = []
    finished = []  # (name, per-epoch records)
    for name, argv in runs:
        recs = read_metrics(os.path.join(a.out, name, "metrics.jsonl"))
        if len(recs) < run_epochs.get(name, epochs) or recorded_command(os.path.join(a.out, name)) != shlex.join(argv):
            continue
        last = recs[-1]
        groups.setdefault(name.rsplit("_s", 1)[0], []).append((name, last["test_acc"], last["wall_s"]))
        curves.append(os.path.join(a.out, name, "metrics.jsonl") + ":" + name)
        finished.append((name, recs))
        if a.keep:
            # run directories are scratch (checkpoints, logs); the per-epoch
            # records are small and are what the documented tables come from
            os.makedirs(a.keep, exist_ok=True)
            shutil.copyfile(os.path.join(a.out, name, "metrics.jsonl"), os.path.join(a.keep, name + ".jsonl"))
            shutil.copyfile(os.path.join(a.out, name, "command.txt"), os.path.join(a.keep, name + ".cmd"))
    titles = {"prog": "progressive size + adaptive regularization (the recipe)",
              "fixed": "fixed final size and final regularization",
              "fixedeq": "fixed final size, %d epochs (about the progressive run's time)" % a.fixed_epochs,
              "fixreg": "progressive size, regularization fixed at its final value",
              "torch": "PyTorch, same recipe (tools/torch_train_ref.py)"}
    print("\n| runs | seeds | final test top-1 per seed | mean top-1 | wall time per seed | mean wall time |")
    print("|---|---|---|---|---|---|")
    for key in ("prog", "fixed", "fixedeq", "fixreg", "torch"):
        g = groups.get(key)
        if not g:
            continue
        accs = [x[1] for x in g]
        walls = [x[2] for x in g]
        print("| %s | %s | %s | %.2f %% | %s | %s |" % (
            titles[key], ", ".join(n.rsplit("_s", 1)[1] for n, _, _ in g),
            ", ".join("%.2f %%" % (100 * x) for x in accs), 100 * statistics.mean(accs),
            ", ".join("%.0f s" % w for w in walls), "%.0f s" % statistics.mean(walls)))
    # the per-epoch table of docs/RESULTS.md: test top-1 (%) of every finished run
    if finished:
        print("\n| epoch | " + " | ".join(n for n, _ in finished) + " |")
        print("|---" * (len(finished) + 1) + "|")
        for ep in range(1, max(len(r) for _, r in finished) + 1):
            cells = ["%.2f (%d px)" % (100 * r[ep - 1]["test_acc"], r[ep - 1].get("eval_size", r[ep - 1].get("size", 0)))
                     if ep <= len(r) else "" for _, r in finished]
            print("| %d | %s |" % (ep, " | ".join(cells)))
    for x, out in (("wall_s", a.plot), ("epoch", a.plot_epoch)):
        if curves and out:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            cmd = [sys.executable, os.path.join(HERE, "plot_metrics.py"), "--out", out, "--x", x, "--y",
                   "test_acc"] + curves
            if subprocess.run(cmd).returncode == 0:
                print("plot: %s" % out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
