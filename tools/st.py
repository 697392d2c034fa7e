"""Tiny safetensors reader/writer in pure Python + numpy.

The `safetensors` package is not needed.  File format
(https://github.com/huggingface/safetensors):

    8 bytes   little-endian uint64 N = length of the JSON header
    N bytes   UTF-8 JSON object:
                { "__metadata__": {"key": "value", ...},            (optional, str -> str)
                  "<name>": {"dtype": "F32", "shape": [..],
                             "data_offsets": [begin, end]}, ... }
              padded with spaces so that 8 + N is a multiple of 8
    rest      tensor data, C-contiguous little-endian; data_offsets are
              relative to the start of this byte buffer; tensors tile the
              buffer without holes or overlap.

API:
    save(path, tensors, metadata=None)      tensors: {name: array-like}
    dumps(tensors, metadata=None) -> bytes
    load(path) -> (tensors, metadata)       tensors: {name: np.ndarray} (owning copies)
    loads(data) -> (tensors, metadata)
    read_header(path) -> (header_dict_without_metadata, metadata)

Torch tensors are accepted by save/dumps (converted with .detach().cpu().numpy()).
BF16 tensors are returned as float32 (numpy has no bfloat16).
"""
import json
import struct

import numpy as np

__all__ = ["save", "dumps", "load", "loads", "read_header", "DTYPES"]

# safetensors dtype name -> numpy little-endian dtype
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024


def _st_dtype(arr):
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    for name, npdt in DTYPES.items():
        if dt.kind == npdt.kind and dt.itemsize == npdt.itemsize:
            return name
    raise TypeError("unsupported dtype %s" % arr.dtype)


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().contiguous().numpy()
    return np.asarray(x)


def dumps(tensors, metadata=None):
    """Serialize {name: array} (+ optional {str: str} metadata) to bytes.

    Tensors are written in the dict's iteration order."""
    header = {}
    if metadata:
        md = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata must map str to str (got %r: %r)" % (k, v))
            md[k] = v
        header["__metadata__"] = md
    blobs = []
    off = 0
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError("bad tensor name %r" % (name,))
        a = _to_numpy(t)
        dt = _st_dtype(a)
        a = np.asarray(a, dtype=DTYPES[dt])  # (ascontiguousarray would turn 0-d into 1-d)
        b = a.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": [int(s) for s in a.shape], "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = (-(8 + len(hjson))) % 8
    hjson += b" " * pad
    return struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs)


def save(path, tensors, metadata=None):
    data = dumps(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _parse_header(data):
    if len(data) < 8:
        raise ValueError("safetensors: file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError("safetensors: bad header length %d" % n)
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("safetensors: header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        raise ValueError("safetensors: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("safetensors: __metadata__ must map str to str")
    return header, metadata, 8 + n


def loads(data):
    """Parse bytes -> ({name: np.ndarray}, {str: str}).  Validates offsets."""
    data = memoryview(data)
    header, metadata, start = _parse_header(data)
    buf_len = len(data) - start
    spans = []
    out = {}
    for name, info in header.items():
        try:
            dt = info["dtype"]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("safetensors: bad entry for %r" % name)
        if any(s < 0 for s in shape):
            raise ValueError("safetensors: negative dim in %r" % name)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if dt == "BF16":
            itemsize = 2
        elif dt in DTYPES:
            itemsize = DTYPES[dt].itemsize
        else:
            raise ValueError("safetensors: unsupported dtype %s for %r" % (dt, name))
        if not (0 <= b <= e <= buf_len) or e - b != count * itemsize:
            raise ValueError("safetensors: bad data_offsets for %r" % name)
        spans.append((b, e, name))
        raw = data[start + b:start + e]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).reshape(tuple(shape))
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dt]).reshape(tuple(shape)).copy()
        out[name] = arr
    # tensors must tile the buffer: no overlap, no holes
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise ValueError("safetensors: hole or overlap before %r" % name)
        pos = e
    if pos != buf_len:
        raise ValueError("safetensors: %d trailing bytes after the last tensor" % (buf_len - pos))
    # keep file order (sorted by offset) for determinism
    ordered = {name: out[name] for _, _, name in spans}
    return ordered, dict(metadata)


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    return loads(data)


def read_header(path):
    """Header entries and metadata without reading the tensor data."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("safetensors: file too short")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise ValueError("safetensors: bad header length %d" % n)
        rest = f.read(n)
    header, metadata, _ = _parse_header(head + rest)
    return header, metadata


if __name__ == "__main__":  # summary of a file: python3 tools/st.py FILE [FILE...]
    import sys

    for p in sys.argv[1:]:
        header, md = read_header(p)
        print("%s: %d tensors" % (p, len(header)))
        for k, v in md.items():
            print("  meta %s = %s" % (k, v if len(v) < 120 else v[:117] + "..."))
        for k, v in header.items():
            print("  %-60s %-4s %s" % (k, v["dtype"], v["shape"]))
