#!/usr/bin/python3
"""Exports torchvision efficientnet_v2_s for the ONNX Runtime peer of `make bench`.

    /usr/bin/python3 tools/export_onnx.py [OUTDIR=build/ort] [--force]

The same export as ../shared/bench/export_onnx.py (random init with seed 0, eval mode, opset 13,
constant folding, input "input", output "logits"): effv2s_384_b1.onnx and effv2s_224_b1.onnx
(batch 1) and effv2s_224_dyn.onnx (dynamic batch), each with <name>.in.f32 (randn seed 1, raw
little-endian float32 NCHW; batch 8 for the dynamic model) and <name>.ref.f32 (torch eager output),
which ../shared/bench/ort_bench.js compares ONNX Runtime's output with (max_abs_diff_vs_torch).

torch.onnx.export does not need the `onnx` Python package; when it is importable (Debian
python3-onnx) the files also go through onnx.checker, otherwise that check is skipped and the
comparison against the torch reference in ort_bench.js is the check.  Files that already exist are
kept unless --force is given.
"""
import os
import sys

MODELS = [("effv2s_384_b1", 384, 1, False), ("effv2s_224_b1", 224, 1, False), ("effv2s_224_dyn", 224, 8, True)]


def main(argv):
    force = "--force" in argv
    args = [a for a in argv if a != "--force"]
    out = args[0] if args else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "ort")
    todo = [m for m in MODELS if force or not all(
        os.path.exists(os.path.join(out, m[0] + ext)) for ext in (".onnx", ".in.f32", ".ref.f32"))]
    if not todo:
        return 0
    import torch
    import torchvision
    try:
        import onnx
    except ImportError:
        onnx = None
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_v2_s(weights=None).eval()
    for name, size, batch, dyn in todo:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 3, size, size, generator=g)
        path = os.path.join(out, name + ".onnx")
        kw = {"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}} if dyn else {}
        tmp = path + ".tmp"
        with torch.no_grad():
            torch.onnx.export(model, x, tmp, opset_version=13, input_names=["input"], output_names=["logits"],
                              do_constant_folding=True, **kw)
            ref = model(x)
        if onnx is not None:
            onnx.checker.check_model(onnx.load(tmp))
        x.numpy().astype("<f4").tofile(os.path.join(out, name + ".in.f32"))
        ref.numpy().astype("<f4").tofile(os.path.join(out, name + ".ref.f32"))
        os.replace(tmp, path)  # the .onnx last: its presence means the set is complete
        print("export_onnx: wrote %s (%.1f MiB), input %s%s" % (path, os.path.getsize(path) / 2**20, tuple(x.shape),
              "" if onnx is not None else ", onnx.checker skipped (no onnx module)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
