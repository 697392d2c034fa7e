#!/bin/sh
# The env2 program as a user runs it: info, init, forward, grad, schedule,
# and its usage and runtime errors (exit 2 and 1 with a message).
# Usage: test_cli.sh [ENV2_BINARY] (default ./env2, which make test refreshes)
env2=${1:-./env2}
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=$(command -v python3 || true)

out=$("$env2" info efficientnetv2-s 2>&1)
echo "$out" | grep -q 'parameters   21,458,488' && ok || bad "info s parameters: $out"
echo "$out" | grep -q '8,365,617,152' && ok || bad "info s MACs at 384"
"$env2" info b0 --size 224 | grep -q '718,086,176' && ok || bad "info b0 MACs at 224"
"$env2" --version | grep -q '^env2 [0-9]' && ok || bad "--version"
# every command answers --help on stdout with exit 0
for c in info init forward grad bench train eval predict schedule; do
    out=$("$env2" $c --help 2>/dev/null) && echo "$out" | grep -q 'usage: env2' && ok || bad "env2 $c --help: $out"
done
"$env2" bench --help | grep -q -- '--profile' && ok || bad "bench --help lists its options"

arch="r1_k3_s1_e1_i16_o16_c1 r1_k3_s2_e4_i16_o24_c1 r1_k3_s2_e4_i24_o32_se0.25"
"$env2" init --arch "$arch" --head 32 --classes 5 --seed 3 -o "$tmp/w.safetensors" && ok || bad "init"
[ -s "$tmp/w.safetensors" ] && ok || bad "init wrote nothing"
# a float32 .npy [2,3,9,11] written by hand (numpy's format 1.0)
if [ -n "$py" ]; then
    "$py" - "$tmp/x.npy" "$tmp/l.npy" <<'PY'
import struct, sys, math
def npy(path, descr, shape, data, fmt):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, ", ".join(map(str, shape)) + ("," if len(shape) == 1 else ""))
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + struct.pack("<%d%s" % (len(data), fmt), *data))
n = 2 * 3 * 9 * 11
npy(sys.argv[1], "<f4", (2, 3, 9, 11), [math.sin(0.3 * i) for i in range(n)], "f")
npy(sys.argv[2], "<i8", (2,), [1, 4], "q")
PY
    "$env2" forward --arch "$arch" --head 32 --classes 5 --weights "$tmp/w.safetensors" --input "$tmp/x.npy" \
        --output "$tmp/y.npy" --threads 2 && ok || bad "forward"
    [ "$(wc -c < "$tmp/y.npy")" -eq $((128 + 2 * 5 * 4)) ] && ok || bad "forward output size"
    "$env2" forward --arch "$arch" --head 32 --classes 5 --weights "$tmp/w.safetensors" --input "$tmp/x.npy" \
        --output "$tmp/y1.npy" --threads 1 && cmp -s "$tmp/y.npy" "$tmp/y1.npy" && ok || bad "forward differs across threads"
    # --no-winograd: the exact path for the 3x3 stride-1 convolution, logits within 1e-4 of the default's
    "$env2" forward --arch "$arch" --head 32 --classes 5 --weights "$tmp/w.safetensors" --input "$tmp/x.npy" \
        --output "$tmp/y2.npy" --no-winograd && "$py" -c '
import struct, sys
a, b = (struct.unpack("<10f", open(p, "rb").read()[128:]) for p in sys.argv[1:3])
m = max(abs(v) for v in b)
sys.exit(0 if max(abs(x - y) for x, y in zip(a, b)) <= 1e-4 * m else 1)' "$tmp/y.npy" "$tmp/y2.npy" && ok ||
        bad "forward --no-winograd"
    "$env2" grad --arch "$arch" --head 32 --classes 5 --weights "$tmp/w.safetensors" --input "$tmp/x.npy" \
        --labels "$tmp/l.npy" -o "$tmp/g.safetensors" | grep -q '^loss ' && ok || bad "grad"
    # wrong channel count in the input: runtime error naming the file
    msg=$("$env2" forward --arch "$arch" --head 32 --classes 5 --in-channels 1 --input "$tmp/x.npy" --output "$tmp/z.npy" 2>&1)
    [ $? -eq 1 ] && echo "$msg" | grep -q 'x.npy' && ok || bad "channel mismatch: $msg"
    [ ! -e "$tmp/z.npy" ] && ok || bad "output written after a failure"
fi
# weights of another architecture are refused with the tensor's name
msg=$("$env2" forward efficientnetv2-b0 --weights "$tmp/w.safetensors" --input "$tmp/x.npy" --output "$tmp/z.npy" 2>&1)
[ $? -eq 1 ] && echo "$msg" | grep -q "features" && ok || bad "foreign weights: $msg"
# usage errors exit 2; unknown variants exit 1 with the name
"$env2" forward >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "forward without arguments should exit 2"
"$env2" frobnicate >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "unknown command should exit 2"
"$env2" info --size 0 s >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "bad --size should exit 2"
msg=$("$env2" info efficientnetv2-q 2>&1); [ $? -eq 1 ] && echo "$msg" | grep -q 'efficientnetv2-q' && ok || bad "unknown variant: $msg"
msg=$("$env2" forward s --weights /nonexistent.safetensors --input "$tmp/x.npy" --output "$tmp/z.npy" 2>&1)
[ $? -eq 1 ] && echo "$msg" | grep -q '/nonexistent.safetensors' && ok || bad "missing weights: $msg"
"$env2" schedule paper-s --epochs 8 | grep -q '185' && ok || bad "schedule paper-s"
# bench --profile: per-family table, then one row per convolution shape whose calls add up to the
# convolution families' calls (3 k x k, 4 1x1 and 1 depthwise in this network)
out=$("$env2" bench --arch "$arch" --head 32 --classes 5 --size 32 --runs 2 --warmup 1 --threads 1 --profile 2>&1)
echo "$out" | grep -q '^convolution layers' && ok || bad "bench --profile: no layer table: $out"
echo "$out" | grep -q '^depthwise  *1x8x8 96->96 k3 s2  *1 ' && ok || bad "bench --profile: depthwise row: $out"
# the stem runs on the direct kernels where the SIMD paths exist, else through im2col + GEMM
echo "$out" | grep -Eq '^conv (small-K \(direct\)|kxk \(im2col\+GEMM\))  *1x32x32 3->16 k3 s2  *1 ' && ok ||
    bad "bench --profile: stem row: $out"
n=$(echo "$out" | sed -n '/^convolution layers/,$p' | awk 'NR > 1 { c += $(NF-3) } END { print c }')
[ "$n" = 8 ] && ok || bad "bench --profile: layer calls add up to $n, not 8: $out"
# the 3x3 stride-1 Fused-MBConv convolution runs through Winograd unless --no-winograd
echo "$out" | grep -q '^conv 3x3 (Winograd)  *1x16x16 16->16 k3 s1  *1 ' && ok || bad "bench --profile: Winograd row: $out"
out=$("$env2" bench --arch "$arch" --head 32 --classes 5 --size 32 --runs 2 --warmup 1 --threads 1 --profile --no-winograd 2>&1)
echo "$out" | grep -q '^conv kxk (im2col+GEMM)  *1x16x16 16->16 k3 s1  *1 ' && ! echo "$out" | grep -q Winograd && ok ||
    bad "bench --profile --no-winograd: $out"
out=$("$env2" bench --arch "$arch" --head 32 --classes 5 --size 32 --batch 4 --runs 2 --warmup 1 --threads 1 --train --profile 2>&1)
echo "$out" | grep -q '^conv backward  *4x8x8 24->96 k1 s1  *1 ' && ok || bad "bench --train --profile: backward row: $out"
# training runs the 3x3 stride-1 forward through Winograd too, unless --no-winograd
echo "$out" | grep -q '^conv 3x3 (Winograd)  *4x16x16 16->16 k3 s1  *1 ' && ok || bad "bench --train --profile: Winograd row: $out"
out=$("$env2" bench --arch "$arch" --head 32 --classes 5 --size 32 --batch 4 --runs 2 --warmup 1 --threads 1 --train --profile --no-winograd 2>&1)
echo "$out" | grep -q '^conv kxk (im2col+GEMM)  *4x16x16 16->16 k3 s1  *1 ' && ! echo "$out" | grep -q Winograd && ok ||
    bad "bench --train --profile --no-winograd: $out"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
