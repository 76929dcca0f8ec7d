#!/usr/bin/env python3
"""Convert PyTorch state dicts saved in the legacy (pre-1.6, non-zip) format
to one safetensors file, with only the Python standard library (no torch).

    python3 tools/convert_legacy_pt.py OUT.safetensors PREFIX=FILE.pt [PREFIX=FILE.pt ...]

Each tensor of FILE.pt is stored as "PREFIX.<name>". modeldock's MTCNN weights
were made with:

    python3 tools/convert_legacy_pt.py models/mtcnn/mtcnn.safetensors \
        pnet=facenet_pytorch/data/pnet.pt rnet=facenet_pytorch/data/rnet.pt onet=facenet_pytorch/data/onet.pt

The legacy format is five pickles in a row (magic number, protocol version,
system info, the object with storages as persistent ids, the list of storage
keys) followed by each storage's raw data: an int64 element count, then the
bytes. Nothing is executed: only the classes named below are allowed.
"""
import json
import pickle
import struct
import sys
from collections import OrderedDict

MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {
    "FloatStorage": ("F32", "f", 4),
    "DoubleStorage": ("F64", "d", 8),
    "LongStorage": ("I64", "q", 8),
    "IntStorage": ("I32", "i", 4),
}


class StorageType:
    def __init__(self, name):
        self.name = name


class StorageRef:
    def __init__(self, key, stype):
        self.key = key
        self.stype = stype


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor(storage, offset, size, stride, *_rest):
    return TensorRef(storage, offset, size, stride)


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor
        if module == "torch" and name in DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return StorageRef(pid[2], pid[1])


def load_state_dict(path):
    with open(path, "rb") as f:
        if pickle.load(f) != MAGIC:
            raise SystemExit(f"{path}: not a legacy torch file (bad magic number)")
        pickle.load(f)
        pickle.load(f)
        obj = SafeUnpickler(f).load()
        keys = pickle.load(f)
        # Element sizes come from the tensors' storage types.
        types = {}
        for t in obj.values():
            types[t.storage.key] = t.storage.stype.name
        storages = {}
        for k in keys:
            (n,) = struct.unpack("<q", f.read(8))
            _, fmt, size = DTYPES[types[k]]
            buf = f.read(n * size)
            if len(buf) != n * size:
                raise SystemExit(f"{path}: storage {k} is truncated")
            storages[k] = (types[k], buf)
    out = OrderedDict()
    for name, t in obj.items():
        stype, buf = storages[t.storage.key]
        dtype, fmt, size = DTYPES[stype]
        numel = 1
        for d in t.size:
            numel *= d
        # Gather with strides (contiguous in practice, but be exact).
        values = struct.unpack(f"<{len(buf) // size}{fmt}", buf)
        flat = []

        def walk(dim, base):
            if dim == len(t.size):
                flat.append(values[base])
                return
            for i in range(t.size[dim]):
                walk(dim + 1, base + i * t.stride[dim])

        walk(0, t.offset)
        assert len(flat) == numel
        out[name] = (dtype, list(t.size), struct.pack(f"<{numel}{fmt}", *flat))
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    tensors = OrderedDict()
    for arg in sys.argv[2:]:
        prefix, _, path = arg.partition("=")
        for name, t in load_state_dict(path).items():
            tensors[f"{prefix}.{name}"] = t
    write_safetensors(sys.argv[1], tensors)
    print(f"wrote {len(tensors)} tensors to {sys.argv[1]}")


if __name__ == "__main__":
    main()
