"""The gnnsim HDF5 data format: one file per split, one group per trajectory, a JSON schema in the root attrs.

Layout of ``datasets/NAME/SPLIT.h5``::

    /                      attrs: format_version, schema (JSON), dt, generator, config (JSON)
    /traj_000000/FIELD     static fields  [dims...]          (e.g. mesh_pos [nodes, 2], cells [cells, 3])
                           dynamic fields [time, dims...]    (e.g. velocity [time, nodes, 2]), chunked by step

A schema entry names each dimension: integers are fixed sizes, strings are sizes that vary per trajectory
but must agree between fields of one trajectory (``nodes``, ``cells``, ``time``, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnnsim.files import atomic_path
from gnnsim.graph import NodeType

FORMAT_VERSION = 1
TRAJ_PREFIX = "traj_"


@dataclass(frozen=True)
class FieldSpec:
    """How one field is stored: static (once per trajectory) or dynamic (per time step), dtype, named dims."""

    kind: str  # "static" | "dynamic"
    dtype: str  # numpy dtype name, e.g. "float32", "int32"
    dims: tuple[int | str, ...]  # dynamic fields start with "time"

    def __post_init__(self):
        if self.kind not in ("static", "dynamic"):
            raise ValueError(f"field kind must be 'static' or 'dynamic', got {self.kind!r}")
        if self.kind == "dynamic" and (not self.dims or self.dims[0] != "time"):
            raise ValueError(f"dynamic field dims must start with 'time', got {list(self.dims)}")
        np.dtype(self.dtype)

    def to_json(self) -> dict:
        return {"kind": self.kind, "dtype": self.dtype, "dims": list(self.dims)}

    @staticmethod
    def from_json(d: Mapping) -> FieldSpec:
        return FieldSpec(kind=d["kind"], dtype=d["dtype"], dims=tuple(d["dims"]))


Schema = dict[str, FieldSpec]


def static(dtype: str, *dims: int | str) -> FieldSpec:
    """Return the spec of a static field."""
    return FieldSpec("static", dtype, tuple(dims))


def dynamic(dtype: str, *dims: int | str) -> FieldSpec:
    """Return the spec of a dynamic field (the leading ``time`` dim is added)."""
    return FieldSpec("dynamic", dtype, ("time", *dims))


class FormatError(ValueError):
    """A file does not follow the gnnsim format; the message names the file, trajectory and field."""


def check_trajectory(traj: Mapping[str, Any], schema: Schema, where: str) -> dict[str, int]:
    """Check one trajectory's arrays (numpy or h5py datasets) against the schema; return its named sizes.

    Raises:
        FormatError: naming ``where`` and the field, with what was expected.
    """
    sizes: dict[str, int] = {}
    for name, spec in schema.items():
        if name not in traj:
            raise FormatError(f"{where}: missing field '{name}' (expected {spec.kind} {spec.dtype} {list(spec.dims)})")
        arr = traj[name]
        if np.dtype(arr.dtype) != np.dtype(spec.dtype):
            raise FormatError(f"{where}: field '{name}' has dtype {arr.dtype}, expected {spec.dtype}")
        if len(arr.shape) != len(spec.dims):
            raise FormatError(
                f"{where}: field '{name}' has shape {list(arr.shape)}, expected dims {list(spec.dims)}"
            )
        for size, dim in zip(arr.shape, spec.dims):
            if isinstance(dim, int):
                if size != dim:
                    raise FormatError(
                        f"{where}: field '{name}' has shape {list(arr.shape)}, expected dims {list(spec.dims)}"
                    )
            elif sizes.setdefault(dim, size) != size:
                raise FormatError(
                    f"{where}: field '{name}' has {dim}={size}, but another field has {dim}={sizes[dim]}"
                )
    return sizes


def check_values(arr: np.ndarray, name: str, where: str) -> None:
    """Refuse NaN/inf in a float field and node types outside ``NodeType`` (the simulators one-hot them on the
    device without reading them back); ``where`` names the file and trajectory."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FormatError(f"{where}: field '{name}' contains NaN or inf")
    if name == "node_type" and arr.size and (arr.min() < 0 or arr.max() >= NodeType.SIZE):
        bad = np.unique(arr[(arr < 0) | (arr >= NodeType.SIZE)])[:5].tolist()
        raise FormatError(
            f"{where}: field 'node_type' has values {bad} outside [0, {int(NodeType.SIZE)}) (gnnsim.graph.NodeType)"
        )


def write_split(
    path: str | os.PathLike,
    trajectories: Iterable[Mapping[str, np.ndarray]],
    schema: Schema,
    *,
    dt: float,
    generator: str,
    config: Mapping | None = None,
) -> Path:
    """Write trajectories to ``path`` in the gnnsim format, atomically (temporary file, then rename).

    Each trajectory is checked against the schema before it is written; NaN or inf in a float field is
    refused. An existing file at ``path`` is replaced only once the new one is complete.

    Args:
        path: destination ``.h5`` file.
        trajectories: mappings from field name to array, shaped as the schema says.
        schema: field name -> FieldSpec.
        dt: time between stored frames.
        generator: what made the data (solver name, converter).
        config: the generator's full configuration, stored as JSON.

    Returns:
        The path written.
    """
    import h5py

    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["schema"] = json.dumps({k: v.to_json() for k, v in schema.items()})
        f.attrs["dt"] = float(dt)
        f.attrs["generator"] = generator
        f.attrs["config"] = json.dumps(config or {}, default=str)
        for i, traj in enumerate(trajectories):
            where = f"{path}: trajectory {i}"
            check_trajectory(traj, schema, where)
            g = f.create_group(f"{TRAJ_PREFIX}{i:06d}")
            for name, spec in schema.items():
                arr = np.ascontiguousarray(traj[name])
                check_values(arr, name, where)
                chunks = (1, *arr.shape[1:]) if spec.kind == "dynamic" and arr.shape[0] > 0 else None
                g.create_dataset(name, data=arr, chunks=chunks)
            count += 1
        f.attrs["num_trajectories"] = count
    return path


class Split:
    """Read access to one split file; checks the schema and every trajectory's layout on open.

    The h5py handle is opened lazily and re-opened in each process (DataLoader workers must not share
    a handle forked from the parent).
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such data file (generate it with gnnsim-data)")
        try:
            with h5py.File(self.path, "r") as f:
                self._read_header(f)
        except OSError as e:
            raise FormatError(f"{self.path}: not a readable HDF5 file ({e})") from None
        self._file = None
        self._pid = None

    def _read_header(self, f) -> None:
        attrs = f.attrs
        for key in ("format_version", "schema", "dt"):
            if key not in attrs:
                raise FormatError(f"{self.path}: root attribute '{key}' is missing (not a gnnsim data file?)")
        if int(attrs["format_version"]) != FORMAT_VERSION:
            raise FormatError(
                f"{self.path}: format_version {int(attrs['format_version'])}, this reader expects {FORMAT_VERSION}"
            )
        try:
            self.schema: Schema = {k: FieldSpec.from_json(v) for k, v in json.loads(attrs["schema"]).items()}
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"{self.path}: root attribute 'schema' is malformed ({e})") from None
        self.dt = float(attrs["dt"])
        self.generator = str(attrs.get("generator", ""))
        self.config = json.loads(attrs.get("config", "{}"))
        names = sorted(k for k in f.keys() if k.startswith(TRAJ_PREFIX))
        expected = attrs.get("num_trajectories")
        if expected is not None and int(expected) != len(names):
            raise FormatError(f"{self.path}: {len(names)} trajectories stored, header says {int(expected)}")
        self.names = names
        self.sizes: list[dict[str, int]] = []
        for name in names:
            self.sizes.append(check_trajectory(f[name], self.schema, f"{self.path}: {name}"))

    def __len__(self) -> int:
        return len(self.names)

    def num_steps(self, i: int) -> int:
        """Return the number of time steps of trajectory ``i`` (0 if it has no dynamic fields)."""
        return self.sizes[i].get("time", 0)

    @property
    def handle(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def read(self, i: int, name: str, time: slice | int | None = None) -> np.ndarray:
        """Read field ``name`` of trajectory ``i`` (a time slice for dynamic fields); refuse NaN/inf."""
        spec = self.schema.get(name)
        if spec is None:
            raise KeyError(f"{self.path}: no field '{name}' (fields: {', '.join(self.schema)})")
        ds = self.handle[self.names[i]][name]
        try:
            arr = ds[()] if spec.kind == "static" or time is None else ds[time]
        except OSError as e:
            raise FormatError(f"{self.path}: {self.names[i]}: field '{name}' cannot be read ({e})") from None
        check_values(arr, name, f"{self.path}: {self.names[i]}")
        return arr

    def trajectory(self, i: int) -> dict[str, np.ndarray]:
        """Read every field of trajectory ``i``."""
        return {name: self.read(i, name) for name in self.schema}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state
