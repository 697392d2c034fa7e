#!/usr/bin/python3
"""PyTorch training-step timing of the Fashion-MNIST demo architecture (the PyTorch side of the
demo rows of `make bench`).

    /usr/bin/python3 tools/torch_demo_bench.py --size 28 [--batch 64] [--steps 20] [--warmup 3]

Builds the model with tools/torch_train_ref.py (resolve_arch + build_model: the same
architecture, channel counts and SE widths as `env2 train --arch ... --stem 24 --head 256`,
1 input channel, 10 classes) and times what one step of the demo does on the compute side:
zero_grad, forward, cross-entropy with label smoothing 0.1, backward, AdamW step (weight decay
0.05 on tensors with ndim > 1, as the demo), in train mode (BN batch statistics, dropout and
drop-path active), channels_last.  Data loading, augmentation and EMA are not timed (nor are
they in `env2 bench --train`).  Prints one JSON line with the same keys as
../shared/bench/torch_bench.py (median_s, min_s, max_s, img_per_s, maxrss_mib, ...).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench import demo_arch  # noqa: E402  (the Makefile's DEMO_ARCH: one place to change it)

DEMO_ARCH = demo_arch()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default=DEMO_ARCH)
    ap.add_argument("--stem", type=int, default=24)
    ap.add_argument("--head", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--drop-path", type=float, default=0.1)
    ap.add_argument("--no-channels-last", action="store_true")
    a = ap.parse_args()

    import torch
    import torch.nn as nn
    import torch_train_ref as ref

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    stages, _stem, head, _ = ref.resolve_arch(a.arch, 1.0, 1.0, a.stem, a.head)
    model = ref.build_model(stages, head, a.classes, a.in_channels, a.dropout, a.drop_path)
    cl = not a.no_channels_last
    mf = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=mf)
    model.train()
    opt = ref.make_optimizer("adamw", model, 0.004, 0.05)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, a.in_channels, a.size, a.size).to(memory_format=mf)
    tgt = torch.randint(0, a.classes, (a.batch,))
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x), tgt)
        loss.backward()
        opt.step()
        t = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(t)
    med = statistics.median(times)
    print(json.dumps({
        "engine": "torch", "torch": torch.__version__, "model": "demo", "mode": "train", "optimizer": "adamw",
        "batch": a.batch, "size": a.size, "num_classes": a.classes, "in_channels": a.in_channels,
        "channels_last": cl, "threads": torch.get_num_threads(), "steps": a.steps, "warmup": a.warmup,
        "params": sum(p.numel() for p in model.parameters()),
        "median_s": med, "min_s": min(times), "max_s": max(times), "img_per_s": a.batch / med,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loss": float(loss), "times_s": [round(t, 5) for t in times],
    }))


if __name__ == "__main__":
    main()
