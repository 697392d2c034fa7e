#!/usr/bin/python3
"""Generate the PyTorch parity fixtures of libefficientnetv2 (test/data/*.safetensors).

    /usr/bin/python3 tools/make_fixtures.py --out test/data        (= `make fixtures`)

Needs torch 1.13 / torchvision 0.14 / numpy; never needed at build time.  Every
fixture holds a small torchvision EfficientNet built from an architecture
string in the official notation, its weights under torchvision state_dict
names, and reference results (eval logits, one training step's gradients and
BN statistics, 5-step optimizer trajectories).  test/data/README.md documents
every tensor.  The helpers here (parse_arch, build_model, make_tf_same,
randomize_bn, scale_classifier) are also used by tools/parity_full.py.
"""
import argparse
import copy
import functools
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

BN_EPS = 1e-3
BN_MOMENTUM = 0.1
LABEL_SMOOTHING = 0.1

# name -> arch, stem, head, classes, in_channels, padding, contents
CONFIGS = {
    "tiny_rgb": dict(
        arch="r2_k3_s1_e1_i24_o16_c1 r2_k3_s2_e4_i16_o24_c1 r2_k3_s2_e4_i24_o32_se0.25 r2_k3_s1_e6_i32_o40_se0.25",
        stem=24, head=64, num_classes=10, in_channels=3, padding="symmetric",
        train_hw=(32, 32), contents=("eval", "train"), seed=1001),
    "tiny_gray_same": dict(
        arch="r1_k3_s1_e1_i16_o16_c1 r1_k3_s2_e4_i16_o24_c1 r2_k5_s2_e4_i24_o32_se0.25 r1_k3_s2_e6_i32_o48_se0.25",
        stem=16, head=48, num_classes=7, in_channels=1, padding="same",
        train_hw=(31, 35), contents=("eval", "train", "opt"), seed=1002),
    "tiny_rgb_same": dict(
        arch="r2_k3_s1_e1_i24_o16_c1 r2_k3_s2_e4_i16_o24_c1 r2_k3_s2_e4_i24_o32_se0.25 r2_k3_s1_e6_i32_o40_se0.25",
        stem=24, head=64, num_classes=5, in_channels=3, padding="same",
        train_hw=(32, 32), contents=("eval",), seed=1003,
        eval_tags=["b1_32x32", "b1_33x33", "b1_40x24", "b3_17x29", "b1_64x64"]),
}

# eval tags: b<batch>_<H>x<W>
EVAL_TAGS = ["b1_32x32", "b1_33x33", "b3_40x24", "b3_17x29", "b1_64x64"]

OPT_BATCHES, OPT_BATCH, OPT_HW = 5, 4, (32, 32)
TRAIN_BATCH = 4

OPTIMIZERS = {
    "sgd": "torch.optim.SGD lr=0.05 momentum=0.9 dampening=0 nesterov=False weight_decay=1e-4 on ndim>1 tensors, 0 otherwise",
    "sgd_nesterov": "torch.optim.SGD lr=0.05 momentum=0.9 dampening=0 nesterov=True weight_decay=1e-4 on ndim>1 tensors, 0 otherwise",
    "adamw": "torch.optim.AdamW lr=1e-3 betas=(0.9,0.999) eps=1e-8 amsgrad=False weight_decay=0.05 on ndim>1 tensors, 0 otherwise",
    "rmsprop_tf": "TF1 RMSProp lr=1e-3 rho=0.9 momentum=0.9 eps=1e-3 (inside sqrt) ms0=1 mom0=0; "
                  "g += 1e-5*w for ndim>1 tensors; ms += (1-rho)*(g*g-ms); mom = 0.9*mom + lr*g/sqrt(ms+eps); w -= mom",
}


# ---------------------------------------------------------------------------------------------
# model construction
# ---------------------------------------------------------------------------------------------

def parse_arch(arch):
    """Official block strings -> list of dicts (r, k, s, e, i, o, se, fused)."""
    stages = []
    for tok in arch.replace(",", " ").replace(";", " ").split():
        d = {"se": None, "fused": False}
        for f in tok.split("_"):
            if f.startswith("se"):
                d["se"] = float(f[2:])
            elif f[0] in "rksio" and f[1:].isdigit():
                d[f[0]] = int(f[1:])
            elif f[0] == "e":
                d["e"] = float(f[1:])
            elif f in ("c0", "c1"):
                d["fused"] = f == "c1"
            elif f.startswith("noskip"):
                raise ValueError("noskip not supported: %s" % tok)
            else:
                raise ValueError("bad field %r in %r" % (f, tok))
        for k in "rksieo":
            if k not in d:
                raise ValueError("missing field %s in %r" % (k, tok))
        stages.append(d)
    return stages


def _check_tv_compatible(stages, stem):
    prev = stem
    for d in stages:
        if d["i"] != prev:
            raise ValueError("stage input %d != previous output %d" % (d["i"], prev))
        prev = d["o"]
        for c in (d["i"], d["o"], int(d["i"] * d["e"])):
            if c % 8:
                raise ValueError("channel %d is not a multiple of 8 (torchvision would round it)" % c)
        if d["fused"] and d["se"]:
            raise ValueError("torchvision FusedMBConv has no SE")
        if not d["fused"] and d["se"] != 0.25:
            raise ValueError("torchvision MBConv always has SE with in//4 squeeze (se0.25)")


def build_model(arch, stem, head, num_classes, in_channels=3, padding="symmetric", bn_eps=BN_EPS,
                dropout=0.0, stochastic_depth_prob=0.0):
    """torchvision EfficientNet for a custom architecture (torchvision init, fp32)."""
    stages = parse_arch(arch)
    _check_tv_compatible(stages, stem)
    setting = []
    for d in stages:
        if d["fused"]:
            setting.append(FusedMBConvConfig(d["e"], d["k"], d["s"], d["i"], d["o"], d["r"]))
        else:
            setting.append(MBConvConfig(d["e"], d["k"], d["s"], d["i"], d["o"], d["r"]))
    model = EfficientNet(setting, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob,
                         num_classes=num_classes, norm_layer=functools.partial(nn.BatchNorm2d, eps=bn_eps),
                         last_channel=head)
    set_in_channels(model, in_channels)
    if padding == "same":
        make_tf_same(model)
    elif padding != "symmetric":
        raise ValueError("padding must be symmetric or same")
    return model


def set_in_channels(model, in_channels):
    """Replace the stem conv for in_channels != 3 (re-initialized like torchvision)."""
    old = model.features[0][0]
    if in_channels == old.in_channels:
        return
    conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    model.features[0][0] = conv


class Conv2dTFSame(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding for stride > 1 (stride-1 convs keep
    their symmetric padding, which equals 'same' for odd kernels).  Used by
    swapping __class__, so parameters and state_dict names are unchanged."""

    def forward(self, x):
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for n, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        (pt, pb), (pl, pr) = pads
        x = F.pad(x, [pl, pr, pt, pb])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def make_tf_same(model):
    n = 0
    for m in model.modules():
        if type(m) is nn.Conv2d and m.stride != (1, 1):
            if m.kernel_size[0] % 2 == 0 or m.padding != ((m.kernel_size[0] - 1) // 2,) * 2:
                raise ValueError("unexpected conv for same padding")
            m.__class__ = Conv2dTFSame
            n += 1
    return n


def bn_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def randomize_bn(model, calib_input, gen, shift=0.1, log_var_range=0.3, proj_gamma=None):
    """Randomize BN affine params and set realistic, perturbed running stats.

    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2).  Running stats are calibrated in one
    eval-mode pass: a pre-hook on every BN measures the per-channel mean and
    (unbiased) variance of its actual input, given the already-perturbed
    earlier layers, and sets running_mean = mean + shift*std*N(0,1),
    running_var = var*exp(U(-r, r)).  So the eval path sees stats that differ
    from the batch's (exercising them) without compounding blow-ups in depth.

    proj_gamma=(lo, hi): gamma ~ U(lo, hi) instead for the BNs without a
    following activation (the projection BN closing each block), i.e. smaller
    residual branches; deep random networks (V2-M/L) otherwise amplify any
    input that differs from the calibration batch from block to block."""
    bns = bn_modules(model)
    proj = set()
    if proj_gamma is not None:
        proj = {id(seq[-1]) for seq in model.modules()
                if isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[-1], nn.BatchNorm2d)}
    for _, m in bns:
        if id(m) in proj:
            lo, hi = proj_gamma
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * (hi - lo) + lo)
        else:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
    noise = {}
    for name, m in bns:
        c = m.num_features
        noise[name] = (torch.randn(c, generator=gen), torch.rand(c, generator=gen) * 2 - 1)

    handles = []
    for name, m in bns:
        def hook(mod, inp, name=name):
            x = inp[0].detach().double()
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=True)
            z, u = noise[name]
            mod.running_mean.copy_(mean + shift * var.sqrt() * z.double())
            mod.running_var.copy_(var * torch.exp(log_var_range * u.double()))
            mod.num_batches_tracked.zero_()
        handles.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    model(calib_input)
    for h in handles:
        h.remove()
    model.train(was_training)


@torch.no_grad()
def scale_classifier(model, x, gen, target_std=2.0, bias_std=0.3):
    """Scale classifier.1.weight so eval logits have std ~target_std; random bias."""
    was_training = model.training
    model.eval()
    fc = model.classifier[1]
    fc.bias.zero_()
    std = model(x).std().item()
    fc.weight.mul_(target_std / max(std, 1e-12))
    fc.bias.copy_(torch.randn(fc.bias.shape, generator=gen) * bias_std)
    model.train(was_training)


def state_dict_numpy(model):
    """state_dict -> {name: np.ndarray}: floats as float32, num_batches_tracked as int64."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        out[k] = v.numpy().astype(np.float32) if v.is_floating_point() else v.numpy().astype(np.int64)
    return out


def load_state_numpy(model, sd):
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

def eval_logits(model, x, dtype):
    m = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        return m(torch.from_numpy(x).to(dtype)).float().numpy()


def train_step_grads(model, x, y, dtype):
    """One train-mode forward/backward: (loss, {param: grad}, {bn: (running_mean, running_var)})."""
    m = copy.deepcopy(model).to(dtype).train()
    m.zero_grad(set_to_none=True)
    out = m(torch.from_numpy(x).to(dtype))
    loss = F.cross_entropy(out, torch.from_numpy(y), label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    grads = {n: p.grad.detach().float().numpy() for n, p in m.named_parameters()}
    stats = {n: (b.running_mean.float().numpy(), b.running_var.float().numpy()) for n, b in bn_modules(m)}
    return float(loss.item()), grads, stats


def _param_groups(m):
    decay = [p for _, p in m.named_parameters() if p.ndim > 1]
    no_decay = [p for _, p in m.named_parameters() if p.ndim <= 1]
    return decay, no_decay


class RMSpropTF:
    """TF1 RMSProp as in the paper / official trainer (spec section 4.4)."""

    def __init__(self, decay, no_decay, lr=1e-3, rho=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5):
        self.groups = [(decay, weight_decay), (no_decay, 0.0)]
        self.lr, self.rho, self.momentum, self.eps = lr, rho, momentum, eps
        self.state = {}

    @torch.no_grad()
    def step(self):
        for params, wd in self.groups:
            for p in params:
                g = p.grad
                if wd:
                    g = g + wd * p
                if p not in self.state:
                    self.state[p] = (torch.ones_like(p), torch.zeros_like(p))
                ms, mom = self.state[p]
                ms.add_((1.0 - self.rho) * (g * g - ms))
                mom.mul_(self.momentum).add_(self.lr * g / torch.sqrt(ms + self.eps))
                p.sub_(mom)

    def zero_grad(self, set_to_none=True):
        for params, _ in self.groups:
            for p in params:
                p.grad = None


def make_optimizer(name, m):
    decay, no_decay = _param_groups(m)
    if name in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                               lr=0.05, momentum=0.9, dampening=0.0, nesterov=(name == "sgd_nesterov"))
    if name == "adamw":
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=False)
    if name == "rmsprop_tf":
        return RMSpropTF(decay, no_decay, lr=1e-3, rho=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5)
    raise ValueError(name)


def trajectory(model, name, xs, ys, dtype):
    """5 optimizer steps in train mode -> (losses [steps], final float state dict)."""
    m = copy.deepcopy(model).to(dtype).train()
    opt = make_optimizer(name, m)
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad(set_to_none=True)
        out = m(torch.from_numpy(x).to(dtype))
        loss = F.cross_entropy(out, torch.from_numpy(y), label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = {k: v.detach().float().numpy() for k, v in m.state_dict().items() if v.is_floating_point()}
    return np.array(losses, dtype=np.float32), final


def structural_zero_grads(grads64, rel=1e-9):
    """Parameters whose gradient is zero in exact arithmetic (e.g. the bias of a
    BN whose output reaches a train-mode BN only through 1x1 convs and
    residual adds): their float values are pure round-off."""
    gmax = max(float(np.abs(g).max()) for g in grads64.values())
    return [n for n, g in grads64.items() if float(np.abs(g).max()) <= rel * gmax]


# ---------------------------------------------------------------------------------------------

def parse_tag(tag):
    b, hw = tag.split("_")
    h, w = hw.split("x")
    return int(b[1:]), int(h), int(w)


def make_fixture(name, cfg, dtype, generator_cmd, optimizers=tuple(OPTIMIZERS), log=print):
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"] * 7 + 1)
    C, K = cfg["in_channels"], cfg["num_classes"]
    model = build_model(cfg["arch"], cfg["stem"], cfg["head"], K, C, cfg["padding"])
    randomize_bn(model, torch.randn(8, C, 32, 32, generator=gen), gen)
    scale_classifier(model, torch.randn(8, C, 32, 32, generator=gen), gen)
    # round the model to what is stored (fp32) - it already is fp32
    sd = state_dict_numpy(model)

    tensors = dict(sd)
    md = {
        "format": "libefficientnetv2 torch parity fixture 1",
        "name": name,
        "arch": cfg["arch"],
        "stem": str(cfg["stem"]),
        "head": str(cfg["head"]),
        "num_classes": str(K),
        "in_channels": str(C),
        "padding": cfg["padding"],
        "bn_eps": repr(BN_EPS),
        "bn_momentum": repr(BN_MOMENTUM),
        "dropout": "0",
        "stochastic_depth_prob": "0",
        "label_smoothing": repr(LABEL_SMOOTHING),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "generator": generator_cmd,
        "seed": str(cfg["seed"]),
        "reference_dtype": str(dtype).replace("torch.", ""),
        "contents": ",".join(cfg["contents"]),
    }

    if "eval" in cfg["contents"]:
        tags = cfg.get("eval_tags", EVAL_TAGS)
        for tag in tags:
            n, h, w = parse_tag(tag)
            x = torch.randn(n, C, h, w, generator=gen).numpy()
            tensors["eval.%s.input" % tag] = x
            tensors["eval.%s.logits" % tag] = eval_logits(model, x, dtype)
        md["eval_tags"] = ",".join(tags)

    if "train" in cfg["contents"]:
        h, w = cfg["train_hw"]
        x = torch.randn(TRAIN_BATCH, C, h, w, generator=gen).numpy()
        y = torch.randint(0, K, (TRAIN_BATCH,), generator=gen).numpy().astype(np.int64)
        loss, grads, stats = train_step_grads(model, x, y, dtype)
        tensors["train.input"] = x
        tensors["train.labels"] = y
        tensors["train.loss"] = np.array([loss], dtype=np.float32)
        for k, g in grads.items():
            tensors["grad." + k] = g
        for k, (rm, rv) in stats.items():
            tensors["train1.%s.running_mean" % k] = rm
            tensors["train1.%s.running_var" % k] = rv
        md["train_hw"] = "%dx%d" % (h, w)
        md["grad_structural_zero"] = ",".join(structural_zero_grads(_grads64(model, x, y)))
        log("  %s train loss %.6f" % (name, loss))

    if "opt" in cfg["contents"]:
        xs = torch.randn(OPT_BATCHES, OPT_BATCH, C, *OPT_HW, generator=gen).numpy()
        ys = torch.randint(0, K, (OPT_BATCHES, OPT_BATCH), generator=gen).numpy().astype(np.int64)
        tensors["opt.input"] = xs
        tensors["opt.labels"] = ys
        for oname in optimizers:
            losses, final = trajectory(model, oname, xs, ys, dtype)
            tensors["%s.losses" % oname] = losses
            for k, v in final.items():
                tensors["%s.final.%s" % (oname, k)] = v
            md["opt.%s" % oname] = OPTIMIZERS[oname]
            log("  %s %-12s losses %s" % (name, oname, " ".join("%.5f" % l for l in losses)))
        md["optimizers"] = ",".join(optimizers)
        zero = structural_zero_grads(_grads64(model, xs[0], ys[0]))
        md["opt_noise_sensitive"] = ",".join(noise_sensitive(model, zero, xs[0]))
        md["opt_steps"] = str(OPT_BATCHES)
        md["opt_schedule"] = "constant learning rate, no warmup, train mode (batch statistics, running stats updated)"
    return tensors, md


@torch.no_grad()
def noise_sensitive(model, zero, x):
    """Structural-zero parameters plus the BN running statistics that change
    when they change.  Their gradient is pure round-off, which AdamW
    normalizes to updates of size ~lr, so after an AdamW trajectory these
    tensors are not reproducible by any implementation (the logits and losses
    are unaffected: train-mode BN removes the shift)."""
    def stats(delta):
        m = copy.deepcopy(model).double().train()
        params = dict(m.named_parameters())
        g = torch.Generator().manual_seed(5)
        for n in zero:
            params[n].add_(delta * torch.randn(params[n].shape, generator=g, dtype=torch.float64))
        m(torch.from_numpy(x).double())
        return {k: v.clone() for k, v in m.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    a, b = stats(0.0), stats(1e-3)
    changed = [k for k in a if (a[k] - b[k]).abs().max().item() > 1e-9 * max(a[k].abs().max().item(), 1.0)]
    return list(zero) + changed


def _grads64(model, x, y):
    """Unrounded float64 gradients (for the structural-zero test)."""
    m = copy.deepcopy(model).double().train()
    out = m(torch.from_numpy(x).double())
    loss = F.cross_entropy(out, torch.from_numpy(y), label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    return {n: p.grad.detach().numpy() for n, p in m.named_parameters()}


def model_from_fixture(t, md, padding=None):
    """Rebuild the fp32 torchvision model of a fixture and load its weights."""
    model = build_model(md["arch"], int(md["stem"]), int(md["head"]), int(md["num_classes"]),
                        int(md["in_channels"]), padding or md["padding"], float(md["bn_eps"]))
    keys = list(model.state_dict())
    missing = [k for k in keys if k not in t]
    if missing:
        raise ValueError("missing tensors: %s" % missing[:5])
    load_state_numpy(model, {k: t[k] for k in keys})
    return model


def _rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def verify(path, log=print):
    """Reload a fixture and recompute everything from its stored weights/inputs.

    The float64 recomputation must reproduce the stored tensors (<= 1e-5
    relative, float32 rounding); the float32 recomputation is reported as a
    guide to what a float32 implementation achieves.  Also checks that TF-same
    and symmetric padding give different logits at even sizes.  Returns the
    number of failures."""
    t, md = st.load(path)
    fails = 0
    model = model_from_fixture(t, md)
    name = os.path.basename(path)
    log("%s: %s, padding %s, %d tensors" % (name, md["arch"], md["padding"], len(t)))

    def check(label, r64, r32, tol=1e-5):
        nonlocal fails
        ok = r64 <= tol
        fails += not ok
        log("  %-40s fp64-recompute %.2e  fp32-torch %.2e  %s" % (label, r64, r32, "ok" if ok else "FAIL"))

    other = "symmetric" if md["padding"] == "same" else "same"
    model_other = model_from_fixture(t, md, padding=other)
    for tag in filter(None, md.get("eval_tags", "").split(",")):
        x, ref = t["eval.%s.input" % tag], t["eval.%s.logits" % tag]
        check("eval %s (max|logit| %.2f)" % (tag, np.abs(ref).max()),
              _rel(eval_logits(model, x, torch.float64), ref), _rel(eval_logits(model, x, torch.float32), ref))
        n, h, w = parse_tag(tag)
        if h % 2 == 0 or w % 2 == 0:
            d = _rel(eval_logits(model_other, x, torch.float64), ref)
            ok = d > 1e-3
            fails += not ok
            log("  %-40s rel diff %.2e  %s" % ("  %s padding differs at %s" % (other, tag), d, "ok" if ok else "FAIL"))

    if "train.input" in t:
        x, y = t["train.input"], t["train.labels"]
        zero = set(filter(None, md.get("grad_structural_zero", "").split(",")))
        res = {}
        for dt in (torch.float64, torch.float32):
            loss, grads, stats = train_step_grads(model, x, y, dt)
            worst = max(((_rel(g, t["grad." + k]), k) for k, g in grads.items() if k not in zero))
            gmax = max(np.abs(t["grad." + k]).max() for k in grads)
            zworst = max([np.abs(grads[k]).max() / gmax for k in zero] or [0.0])
            bn = max(max(_rel(rm, t["train1.%s.running_mean" % k]), _rel(rv, t["train1.%s.running_var" % k]))
                     for k, (rm, rv) in stats.items())
            res[dt] = (_rel([loss], t["train.loss"]), worst, zworst, bn)
        check("train.loss", res[torch.float64][0], res[torch.float32][0])
        check("grad worst tensor (%s)" % res[torch.float32][1][1], res[torch.float64][1][0], res[torch.float32][1][0])
        log("  %-40s fp32-torch max|g|/global max|g| = %.2e" % ("grad structural zeros (%d)" % len(zero),
                                                               res[torch.float32][2]))
        check("train1 BN running stats", res[torch.float64][3], res[torch.float32][3])

    zero = set(filter(None, md.get("opt_noise_sensitive", "").split(",")))
    if "opt.input" in t:
        xs, ys = t["opt.input"], t["opt.labels"]
        for oname in filter(None, md.get("optimizers", "").split(",")):
            r = {}
            for dt in (torch.float64, torch.float32):
                losses, final = trajectory(model, oname, xs, ys, dt)
                worst = max((_rel(v, t["%s.final.%s" % (oname, k)]), k) for k, v in final.items() if k not in zero)
                zw = max([np.abs(final[k] - t["%s.final.%s" % (oname, k)]).max() for k in zero] or [0.0])
                r[dt] = (_rel(losses, t[oname + ".losses"]), worst, zw)
            check("%s losses" % oname, r[torch.float64][0], r[torch.float32][0])
            check("%s final worst (%s)" % (oname, r[torch.float32][1][1]), r[torch.float64][1][0],
                  r[torch.float32][1][0])
            log("  %-40s fp32-torch max abs diff %.2e" % ("%s final, noise-sensitive (%d)" % (oname, len(zero)), r[torch.float32][2]))
    return fails


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="test/data", help="output directory (default test/data)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(CONFIGS))
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="precision of the reference computations (weights and stored tensors are always "
                         "float32; default float64 = exact results of the float32 weights/inputs, rounded)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                    help="trajectories to store in fixtures with 'opt' contents (default: all)")
    ap.add_argument("--verify", action="store_true",
                    help="do not generate: reload the fixtures in --out and recompute everything")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    torch.use_deterministic_algorithms(True)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    os.makedirs(args.out, exist_ok=True)
    cmd = "/usr/bin/python3 tools/make_fixtures.py --out test/data"
    extra = [a for a in (argv if argv is not None else sys.argv[1:])]
    if extra and extra != ["--out", "test/data"]:
        cmd = "/usr/bin/python3 tools/make_fixtures.py " + " ".join(extra)
    names = [n for n in (args.only.split(",") if args.only else CONFIGS)]
    if args.verify:
        fails = sum(verify(os.path.join(args.out, n + ".safetensors")) for n in names)
        print("verify: %d failure(s)" % fails)
        return 1 if fails else 0
    optimizers = [o for o in args.optimizers.split(",") if o]
    for o in optimizers:
        if o not in OPTIMIZERS:
            ap.error("unknown optimizer %s" % o)
    total = 0
    for name in names:
        tensors, md = make_fixture(name, CONFIGS[name], dtype, cmd, optimizers)
        path = os.path.join(args.out, name + ".safetensors")
        size = st.save(path, tensors, md)
        # round-trip check
        t2, md2 = st.load(path)
        assert md2 == md and list(t2) == list(tensors)
        for k in tensors:
            a = np.asarray(tensors[k])
            assert t2[k].shape == a.shape and np.array_equal(t2[k], a.astype(t2[k].dtype)), k
        total += size
        print("wrote %s: %d tensors, %d bytes" % (path, len(tensors), size))
    print("total %d bytes" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
