#!/usr/bin/python3
"""The `env2 train` recipe in PyTorch, for side-by-side accuracy and wall time (docs/RESULTS.md).

    /usr/bin/python3 tools/torch_train_ref.py --data fashion-mnist \\
        --arch "r1_k3_s1_e1_i24_o24_c1 r2_k3_s2_e4_i24_o48_c1 r2_k3_s2_e4_i48_o64_se0.25" \\
        --stem 24 --head 512 --epochs 12 --batch 64 --size-start 16 --size-end 28 \\
        --randaug-start 0 --randaug-end 4 --threads 2 --out runs/fmnist-torch

Needs torch 1.13 / torchvision 0.14 / numpy (the system /usr/bin/python3); nothing else.
Takes the options of `env2 train` that define the recipe (docs/TRAINING.md), with the same
defaults, and writes OUT/metrics.jsonl with the same keys as env2 train plus "engine": "torch",
one line per epoch; the printed epoch line has env2's format.

What is mirrored exactly
  * architecture: stage strings in the official notation (or a named variant, --width/--depth,
    --stem/--head), built with torchvision.models.efficientnet.EfficientNet and
    (Fused)MBConvConfig, BatchNorm eps 1e-3 momentum 0.1, SiLU, torchvision's initialization,
    a 1-channel stem conv for grayscale data.  Channel counts are used as written (torchvision
    would round them to multiples of 8); MBConv stages without `se` get no SE and `seR` gets
    max(1, int(in * R)) squeeze channels, as in the library (torchvision itself always uses
    in // 4).  SE in a Fused-MBConv stage is refused, as by env2.
  * progressive schedule: stage i of M covers epochs [floor(i*E/M), floor((i+1)*E/M));
    value_i = start + (end - start) * i / (M - 1) (the last stage exactly the end value;
    M = 1 uses the end values); sizes rounded to the nearest multiple of --size-multiple, ties
    up; the presets paper-* / official-* with env2's override rules (src/train/schedule.c and
    build_schedule in tools/cmd_train.c).  Dropout is set on model.classifier[0].p, drop-path on
    every StochasticDepth (p = rate * block / blocks) at the start of each epoch.
  * optimizers: rmsprop = TF1 RMSProp (ms starts at 1, ms += (1-rho)(g^2 - ms),
    mom = mu*mom + lr*g/sqrt(ms + eps), w -= mom; rho 0.9, mu 0.9, eps 1e-3, L2 weight decay
    added to the gradient); sgd = torch.optim.SGD momentum 0.9 with L2 decay; adamw =
    torch.optim.AdamW (0.9, 0.999, eps 1e-8, decoupled decay).  Weight decay only on tensors
    with ndim > 1 (conv, SE and classifier weights), via parameter groups.
  * learning rate per step on the global step: warm-up lr*(step+1)/W over
    W = round(warmup_epochs * steps_per_epoch) steps, then 0.97 ** floor(step / (2.4 *
    steps_per_epoch)) (exp), 0.5*(1 + cos(pi * step / (epochs * steps_per_epoch))) (cosine) or
    constant.  Steps per epoch = floor(N / batch), capped by --max-steps; the last partial
    batch is dropped.
  * loss: softmax cross-entropy with label smoothing applied to the (possibly mixed) targets;
    train accuracy = argmax of the logits against argmax of the targets.
  * EMA (--ema D): of all parameters and BN statistics after every step with decay
    min(D, (1 + t) / (10 + t)), t = steps taken; evaluation then uses the EMA weights.
  * Mixup / CutMix as docs/AUGMENTATION.md section 5 (batch reversed as partner, lambda =
    max(l, 1 - l), both on: first half Mixup, second half CutMix, CutMix label weight = the
    box's actual area), random numbers from numpy instead of the library's generator.
  * evaluation on the whole test split (or --eval-max images) after every epoch, at the last
    stage's size (or --eval-size): plain cross-entropy and top-1.

Deliberate differences (the data pipeline is torchvision's own, not a port of ours)
  * training images go through torchvision transforms on PIL images, one sample at a time:
    RandomResizedCrop(size, scale=(crop_area_min, 1), ratio=(3/4, 4/3), bilinear),
    RandomHorizontalFlip (unless --no-flip), RandAugment(num_ops=2, magnitude=round(M),
    num_magnitude_bins=--randaug-bins, fill=128) when M > 0, ToTensor, Normalize(0.5, 0.5).
    RandomResizedCrop samples the area uniformly and the aspect log-uniformly (the library
    follows TF: uniform aspect, uniform integer height), and PIL's bilinear resize
    antialiases when it shrinks (the library's does not).  Evaluation: Resize((S, S))
    bilinear (PIL) + the same normalization.
  * torchvision's RandAugment ops differ in detail from ours (docs/AUGMENTATION.md section 4):
    it has Identity but no Invert, Cutout or SolarizeAdd; translations are relative to the
    image (at most 150/331 of its side) where ours are absolute pixels (100 * M / 10);
    magnitudes are bins of a linear range.  With the default --randaug-bins 11, magnitude
    round(M) is the fraction M/10 of torchvision's maximum range, which matches our level
    M/10 for rotate (30 deg), shear (0.3), the enhance ops (factor 1 +- 0.9), posterize and
    solarize; M above 10 is clamped to 10 (torchvision has no larger range).
    --randaug-bins 31 gives torchvision's default scale (magnitude round(M) of 30).
  * random numbers (initialization, data order, augmentation, dropout) come from torch and
    numpy seeded with --seed, so runs are reproducible but not the same draws as env2's.
  * the data is prepared in the training thread (DataLoader, num_workers=0: the machine has
    two cores), so images_per_s and wall_s include the augmentation time; env2 prepares
    the next batch in a background thread.
  * not supported: --val-split, --resume, --stop-after, datasets other than fashion-mnist and
    mnist; --no-prefetch is accepted and ignored.
"""
import argparse
import copy
import functools
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConv, MBConvConfig
from torchvision.ops.misc import SqueezeExcitation
from torchvision.ops.stochastic_depth import StochasticDepth

f32 = np.float32

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

DEFAULT_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}


def _open_idx(d, names):
    for n in names:
        for cand in (n, n + ".gz"):
            p = os.path.join(d, cand)
            if os.path.exists(p):
                with (gzip.open(p, "rb") if cand.endswith(".gz") else open(p, "rb")) as f:
                    return p, f.read()
    raise FileNotFoundError("%s: none of %s (plain or .gz)" % (d, ", ".join(names)))


def read_idx_images(d, names):
    p, buf = _open_idx(d, names)
    magic, n, h, w = struct.unpack(">IIII", buf[:16])
    if magic != 0x803 or len(buf) != 16 + n * h * w:
        raise ValueError("%s: not an IDX3 uint8 image file" % p)
    return np.frombuffer(buf, np.uint8, offset=16).reshape(n, h, w)


def read_idx_labels(d, names):
    p, buf = _open_idx(d, names)
    magic, n = struct.unpack(">II", buf[:8])
    if magic != 0x801 or len(buf) != 8 + n:
        raise ValueError("%s: not an IDX1 uint8 label file" % p)
    return np.frombuffer(buf, np.uint8, offset=8).astype(np.int64)


def load_mnist_like(d):
    xtr = read_idx_images(d, ["train-images-idx3-ubyte", "train-images.idx3-ubyte"])
    ytr = read_idx_labels(d, ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"])
    xte = read_idx_images(d, ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])
    yte = read_idx_labels(d, ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"])
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("image and label counts differ")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError("train and test images differ in size")
    return xtr, ytr, xte, yte


class TrainSet(torch.utils.data.Dataset):
    """uint8 [N, H, W] images; the transform is replaced at every epoch (stage values)."""

    def __init__(self, images, labels):
        self.images, self.labels, self.transform = images, labels, None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def train_transform(size, magnitude, bins, area_min, flip):
    t = [T.RandomResizedCrop(size, scale=(area_min, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                             interpolation=T.InterpolationMode.BILINEAR)]
    if flip:
        t.append(T.RandomHorizontalFlip())
    if magnitude > 0:
        m = min(int(math.floor(magnitude + 0.5)), bins - 1)
        t.append(T.RandAugment(num_ops=2, magnitude=m, num_magnitude_bins=bins, fill=128))
    t += [T.ToTensor(), T.Normalize((0.5,), (0.5,))]
    return T.Compose(t)


def eval_tensor(images, size):
    """The whole images resized to size x size (PIL bilinear) and normalized, as one tensor."""
    if images.shape[1] == size and images.shape[2] == size:
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
        return ((x - 0.5) / 0.5).unsqueeze(1)
    tf = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                    T.Normalize((0.5,), (0.5,))])
    return torch.stack([tf(Image.fromarray(im, mode="L")) for im in images])


# ---------------------------------------------------------------------------------------------
# architecture (src/model/arch.c)
# ---------------------------------------------------------------------------------------------

V2_BASE = ("r1_k3_s1_e1_i32_o16_c1 r2_k3_s2_e4_i16_o32_c1 r2_k3_s2_e4_i32_o48_c1 "
           "r3_k3_s2_e4_i48_o96_se0.25 r5_k3_s1_e6_i96_o112_se0.25 r8_k3_s2_e6_i112_o192_se0.25")
VARIANTS = {  # name: stages, width, depth, dropout
    "efficientnetv2-s": ("r2_k3_s1_e1_i24_o24_c1 r4_k3_s2_e4_i24_o48_c1 r4_k3_s2_e4_i48_o64_c1 "
                         "r6_k3_s2_e4_i64_o128_se0.25 r9_k3_s1_e6_i128_o160_se0.25 "
                         "r15_k3_s2_e6_i160_o256_se0.25", 1.0, 1.0, 0.2),
    "efficientnetv2-m": ("r3_k3_s1_e1_i24_o24_c1 r5_k3_s2_e4_i24_o48_c1 r5_k3_s2_e4_i48_o80_c1 "
                         "r7_k3_s2_e4_i80_o160_se0.25 r14_k3_s1_e6_i160_o176_se0.25 "
                         "r18_k3_s2_e6_i176_o304_se0.25 r5_k3_s1_e6_i304_o512_se0.25", 1.0, 1.0, 0.3),
    "efficientnetv2-l": ("r4_k3_s1_e1_i32_o32_c1 r7_k3_s2_e4_i32_o64_c1 r7_k3_s2_e4_i64_o96_c1 "
                         "r10_k3_s2_e4_i96_o192_se0.25 r19_k3_s1_e6_i192_o224_se0.25 "
                         "r25_k3_s2_e6_i224_o384_se0.25 r7_k3_s1_e6_i384_o640_se0.25", 1.0, 1.0, 0.4),
    "efficientnetv2-xl": ("r4_k3_s1_e1_i32_o32_c1 r8_k3_s2_e4_i32_o64_c1 r8_k3_s2_e4_i64_o96_c1 "
                          "r16_k3_s2_e4_i96_o192_se0.25 r24_k3_s1_e6_i192_o256_se0.25 "
                          "r32_k3_s2_e6_i256_o512_se0.25 r8_k3_s1_e6_i512_o640_se0.25", 1.0, 1.0, 0.4),
    "efficientnetv2-b0": (V2_BASE, 1.0, 1.0, 0.2),
    "efficientnetv2-b1": (V2_BASE, 1.0, 1.1, 0.2),
    "efficientnetv2-b2": (V2_BASE, 1.1, 1.2, 0.3),
    "efficientnetv2-b3": (V2_BASE, 1.2, 1.4, 0.3),
}


def parse_stages(text):
    stages = []
    for tok in text.replace(",", " ").replace(";", " ").split():
        d = dict(r=-1, k=3, s=1, e=1, i=-1, o=-1, c=0, se=0.0)
        for f in tok.split("_"):
            try:
                if f.startswith("se"):
                    d["se"] = float(f[2:])
                    if not 0 < d["se"] <= 1:
                        raise ValueError
                elif f[:1] in ("r", "k", "s", "e", "i", "o", "c"):
                    d[f[0]] = int(f[1:])
                else:
                    raise ValueError
            except ValueError:
                raise ValueError("stage '%s': bad field '%s'" % (tok, f))
        if not 1 <= d["r"] <= 1000 or d["i"] < 1 or d["o"] < 1:
            raise ValueError("stage '%s': r, i and o must be given" % tok)
        if d["k"] < 1 or d["k"] % 2 == 0:
            raise ValueError("stage '%s': kernel must be odd" % tok)
        if d["s"] not in (1, 2):
            raise ValueError("stage '%s': torchvision blocks take stride 1 or 2" % tok)
        if d["e"] < 1 or d["c"] not in (0, 1):
            raise ValueError("stage '%s': bad e or c" % tok)
        if d["c"] and d["se"] > 0:
            raise ValueError("stage '%s': squeeze-excitation in a Fused-MBConv stage has no torchvision "
                             "equivalent (env2 refuses it too)" % tok)
        stages.append(d)
    if not stages:
        raise ValueError("architecture string has no stages")
    return stages


def round_filters(c, width):
    if width == f32(1.0):
        return c
    return max(8, int(math.floor(float(c) * float(width) + 4.0)) // 8 * 8)


def resolve_arch(arch, width, depth, stem, head):
    """-> (stages, stem, head, default dropout), as arch_resolve in src/model/arch.c."""
    v = None
    if "_" not in arch:
        name = arch if arch.startswith("efficientnetv2-") else "efficientnetv2-" + arch
        if name not in VARIANTS:
            raise ValueError("unknown variant '%s'" % arch)
        v = VARIANTS[name]
    stages = parse_stages(v[0] if v else arch)
    wm = f32(f32(width) * f32(v[1] if v else 1.0))
    dm = f32(f32(depth) * f32(v[2] if v else 1.0))
    for d in stages:
        d["i"], d["o"] = round_filters(d["i"], wm), round_filters(d["o"], wm)
        d["r"] = int(math.ceil(float(dm) * d["r"] - 1e-5))
    stem = stem if stem > 0 else stages[0]["i"]
    head = head if head > 0 else round_filters(1280, wm)
    if stem != stages[0]["i"]:
        raise ValueError("stem width %d differs from the first stage's input %d" % (stem, stages[0]["i"]))
    for a, b in zip(stages, stages[1:]):
        if b["i"] != a["o"]:
            raise ValueError("a stage input %d differs from the previous output %d" % (b["i"], a["o"]))
    return stages, stem, head, (v[3] if v else 0.2)


def _exact(channels, width_mult, min_value=None):
    return int(channels * width_mult)


class ExactMBConvConfig(MBConvConfig):
    """MBConvConfig whose channel counts are used as written (no rounding to multiples of 8)."""
    adjust_channels = staticmethod(_exact)


class ExactFusedMBConvConfig(FusedMBConvConfig):
    adjust_channels = staticmethod(_exact)


def _init_like_torchvision(mod):
    for m in mod.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(stages, head, num_classes, in_channels, dropout, drop_path):
    setting = []
    for d in stages:
        cls = ExactFusedMBConvConfig if d["c"] else ExactMBConvConfig
        setting.append(cls(d["e"], d["k"], d["s"], d["i"], d["o"], d["r"]))
    model = EfficientNet(setting, dropout=dropout, stochastic_depth_prob=drop_path, num_classes=num_classes,
                         norm_layer=functools.partial(nn.BatchNorm2d, eps=1e-3), last_channel=head)
    # SE as the library builds it: none without `se`, max(1, int(in * ratio)) squeeze channels
    for si, d in enumerate(stages):
        for j in range(d["r"]):
            blk = model.features[si + 1][j]
            if isinstance(blk, MBConv):
                cin = d["i"] if j == 0 else d["o"]
                layers = list(blk.block)
                k = next(n for n, m in enumerate(layers) if isinstance(m, SqueezeExcitation))
                if d["se"] <= 0:
                    del layers[k]
                else:
                    sq = max(1, int(cin * d["se"]))
                    if sq != layers[k].fc1.out_channels:
                        layers[k] = SqueezeExcitation(layers[k].fc1.in_channels, sq,
                                                      activation=functools.partial(nn.SiLU, inplace=True))
                        _init_like_torchvision(layers[k])
                blk.block = nn.Sequential(*layers)
    if in_channels != 3:
        old = model.features[0][0]
        conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        model.features[0][0] = conv
    return model


def set_drop_path(model, rate):
    sds = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    for i, m in enumerate(sds):
        m.p = rate * float(i) / len(sds)


# ---------------------------------------------------------------------------------------------
# progressive schedule (src/train/schedule.c, build_schedule in tools/cmd_train.c)
# ---------------------------------------------------------------------------------------------

REGS = ("dropout", "randaug", "mixup", "cutmix", "drop_path")
PRESETS = {  # rule, size_start, size_end, start values, end values (dropout, randaug, mixup, cutmix, drop_path)
    "paper-s": ("linear", 128, 300, (0.1, 5, 0, 0, 0.2), (0.3, 15, 0, 0, 0.2)),
    "paper-m": ("linear", 128, 380, (0.1, 5, 0, 0, 0.2), (0.4, 20, 0.2, 0, 0.2)),
    "paper-l": ("linear", 128, 380, (0.1, 5, 0, 0, 0.2), (0.5, 25, 0.4, 0, 0.2)),
    "official-s": ("official", 128, 300, (0.2, 5, 0, 0, 0.2), (0.2, 10, 0, 0, 0.2)),
    "official-m": ("official", 128, 384, (0.3, 5, 0, 0, 0.2), (0.3, 15, 0.2, 0.2, 0.2)),
    "official-l": ("official", 128, 384, (0.4, 5, 0, 0, 0.2), (0.4, 20, 0.5, 0.5, 0.2)),
    "official-xl": ("official", 128, 384, (0.4, 5, 0, 0, 0.2), (0.4, 20, 0.5, 0.5, 0.2)),
}


class Schedule:
    def __init__(self, num_stages, total, size_start, size_end, size_multiple=1, rule="linear"):
        if num_stages < 1:
            raise ValueError("schedule: the number of stages must be >= 1")
        if total < num_stages:
            raise ValueError("schedule: epochs (%d) must be >= stages (%d)" % (total, num_stages))
        if not (8 <= size_start <= 4096 and 8 <= size_end <= 4096):
            raise ValueError("schedule: image sizes must be in [8, 4096]")
        self.m, self.total = num_stages, total
        self.size_start, self.size_end, self.mult, self.rule = size_start, size_end, size_multiple, rule
        self.start = [f32(0)] * 5
        self.end = [f32(0)] * 5

    def set_range(self, reg, a, b):
        for v in (a, b):
            if not (math.isfinite(v) and v >= 0) or (reg in (0, 4) and v >= 1) or (reg == 1 and v > 30):
                raise ValueError("schedule: bad %s value %g" % (REGS[reg], v))
        self.start[reg], self.end[reg] = f32(a), f32(b)

    def begin(self, i):
        return i * self.total // self.m

    def stage_of(self, pos):
        if pos >= self.total:
            return self.m - 1
        return max(i for i in range(self.m) if self.begin(i) <= pos)

    def size(self, i):
        m = self.m
        if self.rule == "official":
            return int(float(self.size_start) + float(self.size_end - self.size_start) * ((i + 1) / m))
        if m == 1:
            return self.size_end
        num = self.size_start * (m - 1) + (self.size_end - self.size_start) * i
        k = (2 * num + (m - 1) * self.mult) // (2 * (m - 1) * self.mult)
        return max(k * self.mult, self.mult)

    def value(self, i, reg):
        if self.m == 1 or i == self.m - 1:
            return float(self.end[reg])
        a, b = float(self.start[reg]), float(self.end[reg])
        return float(f32(a + (b - a) * i / (self.m - 1)))


def resolve_progressive(a):
    if a.progressive:
        return a.progressive
    if (a.size_start > 0 or a.stages > 0 or a.randaug_start >= 0 or a.mixup_start >= 0 or a.cutmix_start >= 0
            or a.dropout_start >= 0):
        return "linear"
    return "off"


def pick(x, y, fallback):
    return x if x >= 0 else y if y >= 0 else fallback


def build_schedule(a, native):
    """-> (Schedule, dropout_on, drop_path_on), as build_schedule in tools/cmd_train.c."""
    p = a.progressive
    stages = a.stages if a.stages > 0 else min(a.epochs, 4)
    if p == "off":
        stages = 1
    if p not in ("off", "linear"):
        if p.lower() not in PRESETS:
            raise ValueError("unknown preset '%s' (valid: %s)" % (p, ", ".join(PRESETS)))
        rule, s0, s1, v0, v1 = PRESETS[p.lower()]
        s = Schedule(stages, a.epochs, s0, s1, 1, rule)
        for r in range(5):
            s.set_range(r, v0[r], v1[r])
        v0 = [s.value(0, r) for r in range(5)]
        v1 = [s.value(s.m - 1, r) for r in range(5)]
        s0, s1 = s.size(0), s.size(s.m - 1)
        if a.size_start > 0 or a.size_end > 0:
            z = a.size_end if a.size_end > 0 else s1
            st = a.size_start if a.size_start > 0 else int(math.floor(z * s0 / (s1 if s1 > 0 else 1) + 0.5))
            s = Schedule(stages, a.epochs, max(st, 8), z, a.size_multiple, "linear")
            for r in range(5):
                s.set_range(r, v0[r], v1[r])
        ov = [(1, a.randaug_start, a.randaug_end), (2, a.mixup_start, a.mixup_end), (3, a.cutmix_start, a.cutmix_end),
              (0, a.dropout_start if a.dropout_start >= 0 else a.dropout,
               a.dropout_end if a.dropout_end >= 0 else a.dropout),
              (4, a.drop_path, a.drop_path)]
        for r, x, y in ov:
            if x < 0 and y < 0:
                continue
            s.set_range(r, x if x >= 0 else v0[r], y if y >= 0 else v1[r])
        return s, True, True
    end = a.size_end if a.size_end > 0 else native
    start = end if p == "off" else (a.size_start if a.size_start > 0 else end)
    lin = p != "off"
    s = Schedule(stages, a.epochs, max(start, 8), max(end, 8), a.size_multiple if lin else 1)
    dflt_drop = a.dropout if a.dropout >= 0 else 0.2
    ra1, mx1 = pick(a.randaug_end, a.randaug_start, 0), pick(a.mixup_end, a.mixup_start, 0)
    cm1, dr1 = pick(a.cutmix_end, a.cutmix_start, 0), pick(a.dropout_end, a.dropout_start, dflt_drop)
    ra0 = pick(a.randaug_start, ra1, 0) if lin else ra1
    mx0 = pick(a.mixup_start, mx1, 0) if lin else mx1
    cm0 = pick(a.cutmix_start, cm1, 0) if lin else cm1
    dr0 = pick(a.dropout_start, dr1, 0) if lin else dr1
    dp = a.drop_path if a.drop_path >= 0 else 0.2
    for r, x, y in ((1, ra0, ra1), (2, mx0, mx1), (3, cm0, cm1), (0, dr0, dr1), (4, dp, dp)):
        s.set_range(r, x, y)
    return s, (a.dropout >= 0 or a.dropout_start >= 0 or a.dropout_end >= 0), a.drop_path >= 0


# ---------------------------------------------------------------------------------------------
# optimization
# ---------------------------------------------------------------------------------------------

class RMSpropTF(torch.optim.Optimizer):
    """TF1 RMSProp (the paper's optimizer): ms starts at 1, eps inside the square root,
    L2 weight decay added to the gradient."""

    def __init__(self, params, lr=0.016, rho=0.9, momentum=0.9, eps=1e-3, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if g["weight_decay"]:
                    grad = grad.add(p, alpha=g["weight_decay"])
                st = self.state[p]
                if not st:
                    st["ms"] = torch.ones_like(p)
                    st["mom"] = torch.zeros_like(p)
                ms, mom = st["ms"], st["mom"]
                ms.add_((grad * grad - ms) * (1.0 - g["rho"]))
                mom.mul_(g["momentum"]).add_(grad * g["lr"] / torch.sqrt(ms + g["eps"]))
                p.sub_(mom)


def make_optimizer(name, model, lr, wd):
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


class LrSchedule:
    """lr_at in src/train/trainer.c (lr and decay_steps held in float32 as there)."""

    def __init__(self, kind, lr, warmup_steps, total_steps, decay_steps):
        self.kind, self.lr, self.warmup, self.total = kind, float(f32(lr)), warmup_steps, total_steps
        self.decay_steps = float(f32(decay_steps))

    def __call__(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "exp":
            return self.lr * 0.97 ** math.floor(step / self.decay_steps)
        if self.kind == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * min(1.0, step / self.total)))
        return self.lr


class Ema:
    def __init__(self, model, decay):
        self.decay, self.model, self.start = decay, copy.deepcopy(model), 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def restart(self, model, steps):
        """env2_trainer_restart_ema: the average becomes the live weights, the warm-up counts from here."""
        self.model.load_state_dict(model.state_dict())
        self.start = steps

    @torch.no_grad()
    def update(self, model, steps):
        t = steps - self.start
        d = min(self.decay, (1.0 + t) / (10.0 + t))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k], alpha=1.0 - d)
            else:
                v.copy_(src[k])


def mix_batch(x, targets, mixup, cutmix, rng):
    """Mixup / CutMix in place on x [n, C, H, W] and soft targets [n, K] (AUGMENTATION.md section 5)."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    if mixup > 0 and cutmix > 0:
        parts = [(0, n // 2, "mixup", mixup), (n // 2, n, "cutmix", cutmix)]
    elif mixup > 0:
        parts = [(0, n, "mixup", mixup)]
    elif cutmix > 0:
        parts = [(0, n, "cutmix", cutmix)]
    else:
        return
    x0, t0 = x.clone(), targets.clone()
    for lo, hi, kind, alpha in parts:
        m = hi - lo
        for i in range(m):
            j = m - 1 - i
            a, b = lo + i, lo + j
            if kind == "mixup":
                lam = rng.beta(alpha, alpha)
                lam = max(lam, 1.0 - lam)
                if i == j:
                    continue
                x[a] = lam * x0[a] + (1.0 - lam) * x0[b]
                targets[a] = lam * t0[a] + (1.0 - lam) * t0[b]
            else:
                rx, ry, lam = rng.integers(0, w), rng.integers(0, h), rng.beta(alpha, alpha)
                if i == j:
                    continue
                r = math.sqrt(1.0 - lam)
                rw, rh = int(r * w), int(r * h)
                y0, y1 = min(max(ry - rh // 2, 0), h), min(max(ry + rh // 2, 0), h)
                x0b, x1b = min(max(rx - rw // 2, 0), w), min(max(rx + rw // 2, 0), w)
                x[a, :, y0:y1, x0b:x1b] = x0[b, :, y0:y1, x0b:x1b]
                area = (y1 - y0) * (x1b - x0b) / float(h * w)
                targets[a] = (1.0 - area) * t0[a] + area * t0[b]


def soft_xent(logits, targets, smoothing):
    k = logits.shape[1]
    t = targets * (1.0 - smoothing) + smoothing / k
    return -(t * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
def evaluate(model, x, y, batch):
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        z = model(x[i:i + batch]).double()
        loss += F.cross_entropy(z, y[i:i + batch], reduction="sum").item()
        correct += (z.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(x), correct / len(x)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="efficientnetv2-b0", help="variant or stage strings (official notation)")
    g.add_argument("--stem", type=int, default=0)
    g.add_argument("--head", type=int, default=0)
    g.add_argument("--width", type=float, default=1.0)
    g.add_argument("--depth", type=float, default=1.0)
    g.add_argument("--classes", type=int, default=0)
    g.add_argument("--dropout", type=float, default=-1)
    g.add_argument("--drop-path", type=float, default=-1)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="fashion-mnist", choices=sorted(DEFAULT_DIRS))
    g.add_argument("--data-dir", default="")
    g.add_argument("--crop-area-min", type=float, default=0.25)
    g.add_argument("--no-flip", action="store_true")
    g.add_argument("--randaug-bins", type=int, default=11,
                   help="torchvision RandAugment num_magnitude_bins (11: magnitude M = M/10 of the range)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch", type=int, default=64)
    g.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "sgd", "adamw"])
    g.add_argument("--lr", type=float, default=-1)
    g.add_argument("--wd", type=float, default=1e-5)
    g.add_argument("--warmup-epochs", type=float, default=-1)
    g.add_argument("--lr-schedule", default="exp", choices=["exp", "cosine", "constant"])
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--ema", type=float, default=0.0)
    g.add_argument("--ema-restart", action="store_true", help="restart the EMA when a stage begins")
    g = p.add_argument_group("progressive learning")
    g.add_argument("--progressive", default="", help="off | linear | " + " | ".join(PRESETS))
    g.add_argument("--stages", type=int, default=0)
    g.add_argument("--size-start", type=int, default=0)
    g.add_argument("--size-end", type=int, default=0)
    g.add_argument("--size-multiple", type=int, default=1)
    for r in ("randaug", "mixup", "cutmix", "dropout"):
        g.add_argument("--%s-start" % r, type=float, default=-1)
        g.add_argument("--%s-end" % r, type=float, default=-1)
    g = p.add_argument_group("run")
    g.add_argument("--out", default="torch-run")
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=0, help="0 = all cores")
    g.add_argument("--eval-size", type=int, default=0)
    g.add_argument("--eval-stage-size", action="store_true",
                   help="evaluate each epoch at its stage's training size (as env2 train --eval-stage-size)")
    g.add_argument("--eval-max", type=int, default=0)
    g.add_argument("--max-steps", type=int, default=0, help="steps per epoch at most")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--no-prefetch", action="store_true", help="accepted and ignored")
    for o in ("--val-split", "--resume", "--stop-after"):
        g.add_argument(o, default=None, nargs="?", const=True, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for o in ("val_split", "resume", "stop_after"):
        if getattr(a, o) is not None:
            p.error("--%s is not supported by the PyTorch reference" % o.replace("_", "-"))
    checks = [(a.epochs >= 1, "--epochs must be >= 1"), (a.batch >= 2, "--batch must be >= 2"),
              (0 < a.crop_area_min <= 1, "--crop-area-min must be in (0, 1]"),
              (0 <= a.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
              (0 <= a.ema < 1, "--ema must be in [0, 1)"), (a.size_multiple >= 1, "--size-multiple must be >= 1"),
              (a.randaug_bins >= 2, "--randaug-bins must be >= 2"), (a.seed >= 0, "--seed must be >= 0")]
    for ok, msg in checks:
        if not ok:
            p.error(msg)
    return a


def fmt_time(s):
    t = int(s + 0.5) if 0 < s < 1e9 else 0
    return "%d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60) if t >= 3600 else "%02d:%02d" % (t // 60, t % 60)


def num6(v):
    v = float(v)
    return float("%.6g" % v) if math.isfinite(v) else None


def main(argv=None):
    a = parse_args(argv)
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    metrics_path = os.path.join(a.out, "metrics.jsonl")
    if os.path.exists(metrics_path) and not a.overwrite:
        sys.exit("torch_train_ref: %s exists; pass --overwrite or choose another --out" % metrics_path)
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    data_dir = a.data_dir or DEFAULT_DIRS[a.data]
    xtr, ytr, xte, yte = load_mnist_like(data_dir)
    classes = max(int(ytr.max()) + 1, int(yte.max()) + 1)
    if a.classes > 0:
        if a.classes < classes:
            sys.exit("torch_train_ref: --classes %d is fewer than the %d classes in the data" % (a.classes, classes))
        classes = a.classes
    if a.batch > len(xtr):
        sys.exit("torch_train_ref: --batch is larger than the training set")
    if a.lr < 0:
        a.lr = {"rmsprop": 0.016 * a.batch / 256.0, "sgd": 0.5 * a.batch / 1024.0, "adamw": 0.001}[a.optimizer]
    if a.warmup_epochs < 0:
        a.warmup_epochs = min(a.epochs * 0.1, 5)
    a.progressive = resolve_progressive(a)
    native = max(xtr.shape[1], xtr.shape[2])
    try:
        sched, dropout_on, drop_path_on = build_schedule(a, native)
        stages, stem, head, arch_dropout = resolve_arch(a.arch, a.width, a.depth, a.stem, a.head)
    except ValueError as e:
        sys.exit("torch_train_ref: %s" % e)
    max_ra = max(sched.value(i, 1) for i in range(sched.m))
    if math.floor(max_ra + 0.5) > a.randaug_bins - 1:
        print("torch_train_ref: warning: RandAugment magnitude %g is clamped to %d (--randaug-bins %d)"
              % (max_ra, a.randaug_bins - 1, a.randaug_bins), file=sys.stderr)
    model_dropout = a.dropout if a.dropout >= 0 else arch_dropout
    model_drop_path = a.drop_path if a.drop_path >= 0 else 0.2
    model = build_model(stages, head, classes, 1, model_dropout, model_drop_path)
    nparams = sum(p.numel() for p in model.parameters())

    spe = len(xtr) // a.batch
    if a.max_steps > 0:
        spe = min(spe, a.max_steps)
    opt = make_optimizer(a.optimizer, model, a.lr, a.wd)
    lr_at = LrSchedule(a.lr_schedule, a.lr, int(math.floor(a.warmup_epochs * spe + 0.5)), a.epochs * spe, 2.4 * spe)
    ema = Ema(model, a.ema) if a.ema > 0 else None
    eval_size = a.eval_size if a.eval_size > 0 else sched.size(sched.m - 1)
    n_eval = min(a.eval_max, len(xte)) if a.eval_max > 0 else len(xte)
    eval_cache = {}
    y_eval = torch.from_numpy(yte[:n_eval])
    trainset = TrainSet(xtr, ytr)
    loader = torch.utils.data.DataLoader(trainset, batch_size=a.batch, shuffle=True, drop_last=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(a.seed))
    os.makedirs(a.out, exist_ok=True)
    open(metrics_path, "w").close()

    say("torch_train_ref: %s, %d training images (%dx%dx1, %d classes), %s, %d parameters, %d epochs of %d steps, "
        "batch %d, %s lr %g, progressive %s (%d stage%s), torch %s, %d thread%s"
        % (a.data, len(xtr), xtr.shape[1], xtr.shape[2], classes, a.arch, nparams, a.epochs, spe, a.batch,
           a.optimizer, a.lr, a.progressive, sched.m, "" if sched.m == 1 else "s", torch.__version__, threads,
           "" if threads == 1 else "s"))
    t_start = time.perf_counter()
    step = 0
    for ep in range(a.epochs):
        stage = sched.stage_of(ep)
        size = sched.size(stage)
        if ema and a.ema_restart and ep > 0 and sched.stage_of(ep - 1) != stage:
            ema.restart(model, step)
        vals = [sched.value(stage, r) for r in range(5)]
        dropout = vals[0] if dropout_on else model_dropout
        drop_path = vals[4] if drop_path_on else model_drop_path
        ra, mix, cut = vals[1], vals[2], vals[3]
        model.classifier[0].p = dropout
        set_drop_path(model, drop_path)
        trainset.transform = train_transform(size, ra, a.randaug_bins, a.crop_area_min, not a.no_flip)
        model.train()
        t_ep = time.perf_counter()
        loss_sum, correct, seen, lr_used = 0.0, 0, 0, lr_at(step)
        for bi, (x, y) in enumerate(loader):
            if bi >= spe:
                break
            targets = F.one_hot(y, classes).float()
            mix_batch(x, targets, mix, cut, rng)
            lr_used = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr_used
            logits = model(x)
            loss = soft_xent(logits, targets, a.label_smoothing)
            if not torch.isfinite(loss):
                sys.exit("torch_train_ref: non-finite loss at step %d" % (step + 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if ema:
                ema.update(model, step)
            loss_sum += loss.item() * len(x)
            correct += (logits.detach().argmax(1) == targets.argmax(1)).sum().item()
            seen += len(x)
        train_time = time.perf_counter() - t_ep
        es = size if a.eval_stage_size and a.eval_size <= 0 else eval_size
        if es not in eval_cache:
            eval_cache.clear()
            eval_cache[es] = eval_tensor(xte[:n_eval], es)
        te_loss, te_acc = evaluate(ema.model if ema else model, eval_cache[es], y_eval, a.batch)
        wall = time.perf_counter() - t_start
        ips = seen / train_time if train_time > 0 else 0.0
        tl, ta = (loss_sum / seen, correct / seen) if seen else (float("nan"), float("nan"))
        say("epoch %d/%d  stage %d/%d  size %d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1f img/s  %s"
            % (ep + 1, a.epochs, stage + 1, sched.m, size, tl, 100 * ta, te_loss, 100 * te_acc, ips, fmt_time(wall)))
        rec = {"epoch": ep + 1, "step": step, "stage": stage + 1, "size": size, "lr": num6(lr_used),
               "dropout": num6(dropout), "drop_path": num6(drop_path), "randaug": num6(ra), "mixup": num6(mix),
               "cutmix": num6(cut), "train_loss": num6(tl), "train_acc": num6(ta), "test_loss": num6(te_loss),
               "test_acc": num6(te_acc), "eval_size": es, "ema": ema is not None, "wall_s": num6(wall),
               "images_per_s": num6(ips), "engine": "torch"}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    final = ema.model if ema else model
    torch.save(final.state_dict(), os.path.join(a.out, "model.pt"))
    say("saved %s (torchvision state_dict%s)" % (os.path.join(a.out, "model.pt"), ", EMA weights" if ema else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
