"""Using libefficientnetv2 from Python through ctypes (no compilation needed).

    ENV2_LIB=/usr/local/lib/libefficientnetv2.so python3 env2_ctypes.py

Only the standard library is used; with numpy, pass arr.ctypes.data_as(...) instead of the array module.
"""
import array
import ctypes
import os
import sys

lib = ctypes.CDLL(os.environ.get("ENV2_LIB", "libefficientnetv2.so.0"))
lib.env2_version_string.restype = ctypes.c_char_p
lib.env2_last_error.restype = ctypes.c_char_p
lib.env2_model_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_void_p]
lib.env2_model_destroy.argtypes = [ctypes.c_void_p]
lib.env2_model_num_params.argtypes = [ctypes.c_void_p]
lib.env2_model_num_params.restype = ctypes.c_int64
lib.env2_model_output_size.argtypes = [ctypes.c_void_p, ctypes.c_int32]
lib.env2_model_output_size.restype = ctypes.c_size_t
lib.env2_forward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                             ctypes.c_int, ctypes.c_void_p]


def check(status, what):
    if status != 0:
        raise RuntimeError("%s: %s" % (what, lib.env2_last_error().decode()))


model = ctypes.c_void_p()
check(lib.env2_model_create(ctypes.byref(model), b"efficientnetv2-b0", None), "create")
# errors come back as status codes with a message, never as a crash
bad = ctypes.c_void_p()
assert lib.env2_model_create(ctypes.byref(bad), b"efficientnetv2-zz", None) != 0
assert b"efficientnetv2-zz" in lib.env2_last_error()
print("libefficientnetv2", lib.env2_version_string().decode(), "B0 params", lib.env2_model_num_params(model))
assert lib.env2_model_num_params(model) == 7139704
n, size = 1, 64
x = array.array("f", [((i * 37) % 101) / 101.0 - 0.5 for i in range(n * 3 * size * size)])
out = array.array("f", [0.0] * lib.env2_model_output_size(model, n))
xp = x.buffer_info()[0]
op = out.buffer_info()[0]
check(lib.env2_forward(model, xp, n, size, size, 0, op), "forward")
best = max(range(len(out)), key=lambda k: out[k])
print("top class", best, "logit %.4f" % out[best])
lib.env2_model_destroy(model)
sys.exit(0)
