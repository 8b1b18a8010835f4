"""Convert DeepMind's MeshGraphNets data sets (``meta.json`` + ``SPLIT.tfrecord``) into the gnnsim format.

A source directory (deepmind-research/meshgraphnets: cylinder_flow, airfoil, flag_simple, ...) holds
``meta.json`` and ``train.tfrecord``, ``valid.tfrecord``, ``test.tfrecord``. Each record is one
trajectory, a ``tf.train.Example`` whose feature ``NAME`` is a one-element bytes_list with the raw
little-endian array, shaped as ``meta["features"][NAME]["shape"]`` (one ``-1`` inferred)::

    cells     static   [1, -1, 3]     ->  cells     int32   [cells, 3]
    mesh_pos  static   [1, -1, 2]     ->  mesh_pos  float32 [nodes, 2]
    node_type static   [1, -1, 1]     ->  node_type int32   [nodes]          (trailing 1 squeezed)
    velocity  dynamic  [600, -1, 2]   ->  velocity  float32 [time, nodes, 2]

Fields of type ``dynamic_varlen`` (a node count that changes between time steps) have no place in the gnnsim
format, which fixes the node count per trajectory; a data set with such a field is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gnnsim.data.convert.tfrecord_io import parse_example, read_records
from gnnsim.data.format import FieldSpec, FormatError, Schema, check_trajectory, dynamic, static, write_split

GENERATOR = "deepmind-tfrecord"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SourceField:
    """How one field is stored in the TFRecords, and how it is stored in the gnnsim format."""

    name: str
    kind: str  # "static" | "dynamic"
    dtype: str  # numpy dtype name, little-endian in the source
    shape: tuple[int, ...]  # meta.json shape, e.g. (1, -1, 3) or (600, -1, 2); at most one -1
    squeeze: bool  # drop the trailing 1 (node_type [1, -1, 1] -> [nodes])

    def spec(self) -> FieldSpec:
        """Return the gnnsim spec: the leading 1 of static fields dropped, the entity dim named."""
        entity = "cells" if self.name == "cells" else "nodes"
        dims = (entity, *self.shape[2:])
        if self.squeeze:
            dims = dims[:-1]
        return static(self.dtype, *dims) if self.kind == "static" else dynamic(self.dtype, *dims)

    def decode(self, raw: bytes | memoryview) -> np.ndarray:
        """Return the array stored in ``raw`` (a view when possible), in the gnnsim layout.

        Raises:
            ValueError: the byte count does not fit the dtype and shape.
        """
        dtype = np.dtype(self.dtype).newbyteorder("<")
        shape = list(self.shape)
        if len(raw) % dtype.itemsize:
            raise ValueError(
                f"feature '{self.name}' has {len(raw)} bytes, not a whole number of {self.dtype} values "
                f"({dtype.itemsize} bytes each)"
            )
        count = len(raw) // dtype.itemsize
        known = math.prod(s for s in shape if s != -1)
        if -1 in shape:
            if known == 0 or count % known:
                raise ValueError(
                    f"feature '{self.name}' holds {count} {self.dtype} values, which do not fill shape "
                    f"{shape} (expected a multiple of {known})"
                )
        elif count != known:
            raise ValueError(
                f"feature '{self.name}' holds {count} {self.dtype} values, expected {known} for shape {shape}"
            )
        arr = np.frombuffer(raw, dtype).reshape(shape)
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # no copy on little-endian machines
        if self.kind == "static":
            arr = arr[0]
        if self.squeeze:
            arr = arr[..., 0]
        return arr


def source_fields(meta: Mapping[str, Any], where: str = "meta.json") -> list[SourceField]:
    """Return the fields described by a DeepMind ``meta.json``, checked.

    Args:
        meta: the parsed meta.json.
        where: how to name it in errors (its path).

    Raises:
        FormatError: naming ``where`` and the field, for a layout this converter cannot map.
    """
    features = meta.get("features")
    if not isinstance(features, Mapping) or not features:
        raise FormatError(f"{where}: no 'features' mapping (not a DeepMind MeshGraphNets meta.json?)")
    fields = []
    for name, f in features.items():
        kind, shape, dtype = f.get("type"), f.get("shape"), f.get("dtype")
        if kind == "dynamic_varlen":
            raise FormatError(
                f"{where}: field '{name}' is 'dynamic_varlen' (its node count changes between time "
                "steps); the gnnsim format fixes the node count per trajectory, so this data set cannot be "
                "converted"
            )
        if kind not in ("static", "dynamic"):
            raise FormatError(f"{where}: field '{name}' has type {kind!r}, expected 'static' or 'dynamic'")
        expected = "[1, -1, F...]" if kind == "static" else "[T, -1, F...]"
        if (
            not isinstance(shape, list)
            or len(shape) < 2
            or not all(isinstance(s, int) and (s > 0 or s == -1) for s in shape)
            or shape.count(-1) > 1
            or -1 in shape[2:]
            or (kind == "static" and shape[0] != 1)
        ):
            raise FormatError(f"{where}: field '{name}' has {kind} shape {shape}, expected {expected}")
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype is None or np_dtype.kind not in "biuf":
            raise FormatError(f"{where}: field '{name}' has dtype {dtype!r}, expected a numeric dtype")
        squeeze = kind == "static" and name == "node_type" and len(shape) == 3 and shape[-1] == 1
        fields.append(SourceField(name, kind, np_dtype.name, tuple(shape), squeeze))
    return fields


def schema_from_meta(meta: Mapping[str, Any]) -> Schema:
    """Return the gnnsim schema of a DeepMind data set, e.g. ``velocity [600, -1, 2] -> [time, nodes, 2]``."""
    return {f.name: f.spec() for f in source_fields(meta)}


def read_meta(src_dir: str | os.PathLike) -> dict[str, Any]:
    """Load and check ``src_dir/meta.json``.

    Raises:
        FileNotFoundError: no meta.json in ``src_dir``.
        FormatError: it is not valid JSON, has no positive ``dt``, or describes fields that cannot be mapped.
    """
    path = Path(src_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (expected a DeepMind MeshGraphNets data set: meta.json and SPLIT.tfrecord)"
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    dt = meta.get("dt")
    if isinstance(dt, bool) or not isinstance(dt, int | float) or not dt > 0:
        raise FormatError(f"{path}: 'dt' is {dt!r}, expected the positive time step between frames")
    source_fields(meta, str(path))
    return meta


def read_trajectories(
    path: str | os.PathLike, meta: Mapping[str, Any], limit: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the trajectories of one TFRecord file, one record in memory at a time, in the gnnsim layout.

    Args:
        path: a ``SPLIT.tfrecord`` file.
        meta: the data set's parsed meta.json.
        limit: stop after this many trajectories (None: all).

    Yields:
        Field name -> array, e.g. ``mesh_pos [nodes, 2]``, ``node_type [nodes]``,
        ``velocity [time, nodes, 2]``.

    Raises:
        FormatError: naming the file, the record and the field, with what was expected.
    """
    fields = source_fields(meta)
    schema = {f.name: f.spec() for f in fields}
    for index, record in enumerate(read_records(path)):
        if limit is not None and index >= limit:
            return
        where = f"{path}: record {index}"
        try:
            features = parse_example(record)
            traj = {}
            for field in fields:
                feature = features.get(field.name)
                if feature is None:
                    present = ", ".join(sorted(features)) or "no features"
                    raise ValueError(
                        f"missing feature '{field.name}' (expected raw {field.dtype} bytes of shape "
                        f"{list(field.shape)}; the record has: {present})"
                    )
                if feature.kind != "bytes_list":
                    raise ValueError(
                        f"feature '{field.name}' is a {feature.kind}, expected a bytes_list of raw "
                        f"{field.dtype} bytes"
                    )
                values = feature.values
                traj[field.name] = field.decode(values[0] if len(values) == 1 else b"".join(values))
        except ValueError as e:
            raise FormatError(f"{where}: {e}") from None
        check_trajectory(traj, schema, where)  # e.g. mesh_pos and velocity disagree on the node count
        yield traj


def convert_split(
    src_dir: str | os.PathLike, split: str, dst_path: str | os.PathLike, limit: int | None = None
) -> Path:
    """Convert ``src_dir/SPLIT.tfrecord`` into a gnnsim split file, streaming one trajectory at a time.

    The file stores ``dt`` from meta.json, generator ``"deepmind-tfrecord"`` and config
    ``{"meta": <meta.json>, "source": <tfrecord path>, "split": split, "limit": limit}``.

    Args:
        src_dir: the DeepMind data set directory (meta.json, SPLIT.tfrecord).
        split: ``train``, ``valid`` or ``test`` (any name with a ``.tfrecord`` file).
        dst_path: the ``.h5`` file to write (atomically).
        limit: convert only the first ``limit`` trajectories (None: all).

    Returns:
        The path written.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    src_dir = Path(src_dir)
    meta = read_meta(src_dir)
    src = src_dir / f"{split}.tfrecord"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file (DeepMind keeps SPLIT.tfrecord beside meta.json)")
    trajs = tqdm(read_trajectories(src, meta, limit), total=limit, desc=split, unit="traj", leave=False)
    config = {"meta": meta, "source": str(src.resolve()), "split": split, "limit": limit}
    schema = schema_from_meta(meta)
    return write_split(dst_path, trajs, schema, dt=meta["dt"], generator=GENERATOR, config=config)


def convert_dataset(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
) -> dict[str, Path]:
    """Convert a DeepMind data set directory into ``dst_dir/SPLIT.h5`` for each split.

    Every split's TFRecord file is looked for before anything is converted.

    Args:
        src_dir: the DeepMind data set directory (meta.json, train/valid/test.tfrecord).
        dst_dir: the gnnsim data set directory to write, e.g. ``datasets/cylinder_flow``.
        splits: which splits to convert.
        limit: convert only the first ``limit`` trajectories of each split (None: all).

    Returns:
        Split name -> path written.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    read_meta(src_dir)
    missing = [s for s in splits if not (src_dir / f"{s}.tfrecord").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{src_dir}: no {', '.join(s + '.tfrecord' for s in missing)} (choose the splits that exist)"
        )
    return {s: convert_split(src_dir, s, dst_dir / f"{s}.h5", limit=limit) for s in splits}
