"""Write tiny data sets in DeepMind's MeshGraphNets layout (meta.json + SPLIT.tfrecord), without TensorFlow.

The protobuf encoder here is written independently of the reader in ``gnnsim.data.convert.tfrecord_io``;
only the CRC is shared (and checked against published test vectors in the tests).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from gnnsim.data.convert.tfrecord_io import masked_crc32c

# A cylinder_flow-like meta.json, with 4 stored steps instead of 600.
STEPS = 4
META = {
    "simulator": "comsol",
    "dt": 0.01,
    "collision_radius": None,
    "features": {
        "cells": {"type": "static", "shape": [1, -1, 3], "dtype": "int32"},
        "mesh_pos": {"type": "static", "shape": [1, -1, 2], "dtype": "float32"},
        "node_type": {"type": "static", "shape": [1, -1, 1], "dtype": "int32"},
        "velocity": {"type": "dynamic", "shape": [STEPS, -1, 2], "dtype": "float32"},
        "pressure": {"type": "dynamic", "shape": [STEPS, -1, 1], "dtype": "float32"},
    },
    "field_names": ["cells", "mesh_pos", "node_type", "velocity", "pressure"],
    "trajectory_length": STEPS,
}


def varint(n: int) -> bytes:
    """Encode a non-negative int (or an int64, as its two's complement) as a protobuf varint."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Encode field ``number`` with wire type 2."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(*values: bytes) -> bytes:
    """Encode ``Feature{bytes_list: BytesList{value: values}}``."""
    return length_delimited(1, b"".join(length_delimited(1, v) for v in values))


def example(features: Mapping[str, bytes]) -> bytes:
    """Encode ``Example{features: Features{feature: {name: Feature}}}`` from encoded Feature messages."""
    entries = b"".join(
        length_delimited(1, length_delimited(1, name.encode()) + length_delimited(2, feature))
        for name, feature in features.items()
    )
    return length_delimited(1, entries)


def frame(data: bytes) -> bytes:
    """Frame one record: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_tfrecord(path: str | Path, records: Iterable[bytes]) -> Path:
    """Write the records to a TFRecord file."""
    path = Path(path)
    path.write_bytes(b"".join(frame(r) for r in records))
    return path


def trajectory(rng: np.random.Generator, nodes: int, steps: int = STEPS) -> dict[str, np.ndarray]:
    """Return one random trajectory in DeepMind's layout (static fields with their leading 1)."""
    return {
        "cells": rng.integers(0, nodes, size=(1, nodes - 2, 3), dtype=np.int32),
        "mesh_pos": rng.normal(size=(1, nodes, 2)).astype(np.float32),
        "node_type": rng.integers(0, 7, size=(1, nodes, 1), dtype=np.int32),
        "velocity": rng.normal(size=(steps, nodes, 2)).astype(np.float32),
        "pressure": rng.normal(size=(steps, nodes, 1)).astype(np.float32),
    }


def trajectory_record(traj: Mapping[str, np.ndarray]) -> bytes:
    """Encode a trajectory as DeepMind does: one bytes_list of raw little-endian bytes per field."""
    return example({k: bytes_feature(raw_le(v)) for k, v in traj.items()})


def raw_le(arr: np.ndarray) -> bytes:
    """Return the array's raw little-endian bytes, C order (what ``tf.io.decode_raw`` reads)."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def write_dataset(
    root: str | Path, node_counts: Mapping[str, list[int]], meta: Mapping = META, seed: int = 0
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Write ``root/meta.json`` and ``root/SPLIT.tfrecord`` (one trajectory per node count); return the arrays."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(seed)
    out = {}
    for split, counts in node_counts.items():
        trajs = [trajectory(rng, n) for n in counts]
        write_tfrecord(root / f"{split}.tfrecord", (trajectory_record(t) for t in trajs))
        out[split] = trajs
    return out
