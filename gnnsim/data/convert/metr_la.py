"""METR-LA / PEMS-BAY -> gnnsim format, with h5py alone (no pandas, no PyTables) and no blind unpickling.

Inputs (as distributed with DCRNN, Li et al. 2018, https://arxiv.org/abs/1707.01926):

- ``metr-la.h5`` / ``pems-bay.h5``: a pandas ``HDFStore`` holding one DataFrame in *fixed* format under a key
  (``df`` for METR-LA, ``speed`` for PEMS-BAY). The group has attrs ``pandas_type='frame'``, ``ndim=2``,
  ``nblocks``; datasets ``axis0`` (column labels = sensor ids, bytes or int64), ``axis1`` (row labels =
  timestamps, int64 in the unit its ``kind`` attr names: ``datetime64`` = ns, ``datetime64[us]`` = us), and
  per block ``blockI_items`` (its columns) and ``blockI_values`` (stored transposed, ``[time, items]``,
  attr ``transposed=1``). Speeds in mph, 0 = missing.
- the sensor graph, either ``distances_la_2012.csv`` / ``distances_bay_2017.csv`` (``from,to,cost`` road
  distances, turned into DCRNN's thresholded Gaussian kernel), or DCRNN's ``adj_mx.pkl``
  (``(sensor_ids, sensor_id_to_ind, adj_mx)``) read through an unpickler that only rebuilds plain
  containers and numeric numpy arrays.

Output: ``{train,valid,test}.h5`` with one trajectory each (``SCHEMA``); the edges are the non-zero kernel
entries ``W[i, j]`` as ``senders=i -> receivers=j`` with ``edge_weight=W[i, j]``. The splits are cut so
that the forecast windows inside each split (``input_steps`` before, ``output_steps`` after an origin) are
exactly DCRNN's train/val/test samples (70/10/20 by sample count, rounded as DCRNN does).
"""

from __future__ import annotations

import csv
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnsim.data.format import dynamic, static, write_split

SCHEMA = {
    "speed": dynamic("float32", "nodes", 1),  # as in the source (mph), 0 where missing
    "mask": dynamic("bool", "nodes", 1),
    "time_of_day": dynamic("float32"),  # fraction of the day at the timestamp
    "day_of_week": dynamic("int32"),  # 0 = Monday
    "senders": static("int32", "edges"),
    "receivers": static("int32", "edges"),
    "edge_weight": static("float32", "edges"),  # Gaussian-kernel weight W[sender, receiver]
}

_NS_PER = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class PandasFrame:
    """A DataFrame read from a pandas fixed-format HDF5 group."""

    columns: list[str]  # [N] column labels as strings (sensor ids)
    index_ns: np.ndarray  # [T] int64 timestamps, ns since 1970-01-01 (naive, i.e. local time)
    values: np.ndarray  # [T, N] float64
    key: str = ""  # the store key it was read from


def _attr_str(attrs, name: str, default: str | None = None) -> str | None:
    if name not in attrs:
        return default
    v = attrs[name]
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _labels(ds, where: str) -> list[str]:
    arr = ds[()]
    if arr.dtype.kind == "S":
        return [x.decode("utf-8") for x in arr]
    if arr.dtype.kind in "iuf":
        return [str(int(x)) if arr.dtype.kind in "iu" else repr(float(x)) for x in arr]
    if arr.dtype.kind == "O":  # variable-length strings
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr]
    raise ValueError(f"{where}: labels of dtype {arr.dtype} are not supported (expected strings or integers)")


def read_pandas_frame(path: str | os.PathLike, key: str | None = None) -> PandasFrame:
    """Read a DataFrame that ``DataFrame.to_hdf(path, key)`` wrote in fixed format, with h5py only.

    Args:
        path: the ``.h5`` file.
        key: the store key (``df``, ``speed``); ``None`` picks the only frame group in the file.

    Raises:
        ValueError: naming the file and the group, dataset or attribute that does not fit the layout.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (download METR-LA / PEMS-BAY from the DCRNN authors)")
    with h5py.File(path, "r") as f:
        if key is None:
            frames = [
                k
                for k in f
                if isinstance(f[k], h5py.Group) and _attr_str(f[k].attrs, "pandas_type") == "frame"
            ]
            if len(frames) != 1:
                raise ValueError(
                    f"{path}: expected one pandas frame group, found {frames or 'none'}; pass key="
                )
            key = frames[0]
        if key not in f:
            raise ValueError(f"{path}: no group '{key}' (groups: {', '.join(f.keys())})")
        g = f[key]
        where = f"{path}:/{key}"
        ptype = _attr_str(g.attrs, "pandas_type")
        if ptype != "frame":
            raise ValueError(
                f"{where}: attr 'pandas_type' is {ptype!r}, expected 'frame' (fixed-format DataFrame; "
                "table format is not supported)"
            )
        for name in ("axis0", "axis1"):
            if name not in g:
                raise ValueError(f"{where}: dataset '{name}' is missing")
        columns = _labels(g["axis0"], f"{where}/axis0")
        kind = _attr_str(g["axis1"].attrs, "kind", "")
        if not kind.startswith("datetime64"):
            raise ValueError(f"{where}/axis1: attr 'kind' is {kind!r}, expected a datetime64 index")
        if "tz" in g["axis1"].attrs:
            raise ValueError(f"{where}/axis1: time-zone aware index; convert it to naive local time first")
        unit = kind[len("datetime64[") : -1] if "[" in kind else "ns"
        if unit not in _NS_PER:
            raise ValueError(f"{where}/axis1: unsupported datetime unit {unit!r} in kind {kind!r}")
        index_ns = g["axis1"][()].astype(np.int64) * _NS_PER[unit]
        nblocks = int(g.attrs.get("nblocks", 1))
        col_pos = {c: i for i, c in enumerate(columns)}
        values = np.full((len(index_ns), len(columns)), np.nan)
        filled = np.zeros(len(columns), bool)
        for b in range(nblocks):
            items_name, values_name = f"block{b}_items", f"block{b}_values"
            for name in (items_name, values_name):
                if name not in g:
                    raise ValueError(f"{where}: dataset '{name}' is missing (attr nblocks={nblocks})")
            items = _labels(g[items_name], f"{where}/{items_name}")
            ds = g[values_name]
            transposed = bool(np.asarray(ds.attrs.get("transposed", 1)))
            expect = (len(index_ns), len(items)) if transposed else (len(items), len(index_ns))
            if ds.shape != expect:
                raise ValueError(
                    f"{where}/{values_name}: shape {list(ds.shape)}, expected {list(expect)} "
                    f"({len(index_ns)} timestamps x {len(items)} items, transposed={transposed})"
                )
            if ds.dtype.kind not in "fiub":
                raise ValueError(f"{where}/{values_name}: dtype {ds.dtype} is not numeric")
            block = ds[()].astype(np.float64)
            block = block if transposed else block.T
            for j, item in enumerate(items):
                if item not in col_pos:
                    raise ValueError(f"{where}/{items_name}: item {item!r} is not a column in axis0")
                values[:, col_pos[item]] = block[:, j]
                filled[col_pos[item]] = True
        if not filled.all():
            raise ValueError(
                f"{where}: columns {[c for c, ok in zip(columns, filled) if not ok][:5]} are in no block"
            )
    return PandasFrame(columns=columns, index_ns=index_ns, values=values, key=key)


def read_distances(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """Read a DCRNN distance file (``from,to,cost`` with a header) into (from id, to id, distance) triples."""
    out = []
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["from", "to", "cost"]:
            raise ValueError(f"{path}: expected the header 'from,to,cost', got {header}")
        for n, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                out.append((_id(row[0]), _id(row[1]), float(row[2])))
            except (IndexError, ValueError):
                raise ValueError(f"{path}: line {n}: expected 'from,to,cost', got {row}") from None
    return out


def _id(s: str) -> str:
    """Normalise a sensor id: '773869', '773869.0' and 773869 all become '773869'."""
    s = str(s).strip()
    try:
        f = float(s)
        return str(int(f)) if f.is_integer() else s
    except ValueError:
        return s


def gaussian_kernel_adjacency(
    sensor_ids: list[str], distances: list[tuple[str, str, float]], normalized_k: float = 0.1
) -> np.ndarray:
    """Return DCRNN's thresholded Gaussian kernel ``W[i, j] = exp(-d_ij^2 / sigma^2)``, `[N, N]` float32.

    ``d_ij`` is the listed distance from sensor i to sensor j (inf if not listed, so ``W = 0``), sigma the
    standard deviation of the listed (finite) distances between known sensors, and entries below
    ``normalized_k`` are set to 0 (DCRNN ``gen_adj_mx.get_adjacency_matrix``).
    """
    ids = [_id(s) for s in sensor_ids]
    index = {s: i for i, s in enumerate(ids)}
    d = np.full((len(ids), len(ids)), np.inf, dtype=np.float32)
    for a, b, c in distances:
        if a in index and b in index:
            d[index[a], index[b]] = c
    finite = d[np.isfinite(d)]
    if finite.size == 0:
        raise ValueError(
            "no distance connects two of the given sensors; are the sensor ids of the same data set?"
        )
    sigma = finite.std()
    if sigma == 0:
        raise ValueError("all listed distances are equal, so the kernel width (their std) is 0")
    w = np.exp(-np.square(d / sigma))
    w[w < normalized_k] = 0
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# adj_mx.pkl without trusting it

_NUMPY_CALLABLES = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use to carry bytes (latin1 only)."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591") or not isinstance(
        text, str
    ):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except numpy's array/dtype/scalar reconstruction helpers."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) not in _NUMPY_CALLABLES:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")
        if module.startswith("numpy.core."):  # pickles from numpy < 2 name the old module path
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def _check_plain(obj, depth: int = 0) -> None:
    if depth > 20:
        raise pickle.UnpicklingError("nesting deeper than 20 levels")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufcSU":
            raise pickle.UnpicklingError(f"array of dtype {obj.dtype} (only numeric or string arrays)")
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _check_plain(x, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.generic)):
        raise pickle.UnpicklingError(f"object of type {type(obj).__name__}")


def load_plain_pickle(path: str | os.PathLike):
    """Unpickle a file that holds only lists/tuples/dicts/strings/numbers and numeric numpy arrays.

    Python 2 pickles (DCRNN's ``adj_mx.pkl``) are read with ``encoding='latin1'``, as numpy recommends.

    Raises:
        ValueError: one line naming the file and what it refused to build.
    """
    data = Path(path).read_bytes()
    for encoding in ("ASCII", "latin1"):
        try:
            obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
            _check_plain(obj)
            return obj
        except UnicodeDecodeError:
            continue
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{path}: not a plain pickle of lists/dicts/strings/numeric arrays ({e}); "
                "use the distances CSV instead"
            ) from None
    raise ValueError(f"{path}: cannot decode the pickle's strings as ASCII or latin1")


def load_adj_pickle(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read DCRNN's ``adj_mx.pkl`` = ``(sensor_ids, sensor_id_to_ind, adj_mx)``; return (ids, `[N, N]` W)."""
    obj = load_plain_pickle(path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        raise ValueError(f"{path}: expected (sensor_ids, sensor_id_to_ind, adj_mx), got {type(obj).__name__}")
    ids, _, adj = obj
    ids = [_id(s.decode() if isinstance(s, bytes) else s) for s in ids]
    adj = np.asarray(adj, dtype=np.float32)
    if adj.shape != (len(ids), len(ids)):
        raise ValueError(f"{path}: adj_mx has shape {list(adj.shape)}, expected [{len(ids)}, {len(ids)}]")
    return ids, adj


# ---------------------------------------------------------------------------------------------------------
# Conversion


def adjacency_to_edges(w: np.ndarray, self_loops: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (senders, receivers, weights) of the non-zero entries ``w[sender, receiver]``, row-major."""
    w = np.asarray(w)
    keep = w != 0
    if not self_loops:
        np.fill_diagonal(keep, False)
    s, r = np.nonzero(keep)
    return s.astype(np.int32), r.astype(np.int32), w[s, r].astype(np.float32)


def dcrnn_split_sizes(
    num_steps: int,
    input_steps: int = 12,
    output_steps: int = 12,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> tuple[int, int, int]:
    """Return DCRNN's (train, val, test) sample counts for a series of ``num_steps`` intervals."""
    n = num_steps - input_steps - output_steps + 1
    if n <= 0:
        raise ValueError(f"{num_steps} steps are fewer than one window of {input_steps}+{output_steps}")
    n_test = round(n * fractions[2])
    n_train = round(n * fractions[0])
    return n_train, n - n_train - n_test, n_test


def time_features(index_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (time of day as a fraction of the day, day of week with 0 = Monday) of ns timestamps."""
    days, rem = np.divmod(np.asarray(index_ns, dtype=np.int64), _NS_PER_DAY)
    return (rem / _NS_PER_DAY).astype(np.float32), ((days + 3) % 7).astype(
        np.int32
    )  # 1970-01-01 was a Thursday


def convert(
    h5_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    distances: str | os.PathLike | None = None,
    adj_pkl: str | os.PathLike | None = None,
    key: str | None = None,
    normalized_k: float = 0.1,
    input_steps: int = 12,
    output_steps: int = 12,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    self_loops: bool = False,
) -> dict:
    """Convert METR-LA / PEMS-BAY to ``out_dir/{train,valid,test}.h5``; return the config stored with it.

    Args:
        h5_path: ``metr-la.h5`` or ``pems-bay.h5``.
        out_dir: output directory.
        distances: the ``from,to,cost`` CSV (kernel computed here); or
        adj_pkl: DCRNN's ``adj_mx.pkl`` (read without executing anything). Exactly one of the two.
        key: the frame's key in the store (auto-detected if None).
        normalized_k: kernel threshold (CSV only).
        input_steps, output_steps, fractions: DCRNN's windowing and split; each split file holds exactly the
            intervals its samples need, so neighbouring splits share ``input_steps + output_steps - 1`` steps.
        self_loops: keep the kernel's diagonal as edges.
    """
    if (distances is None) == (adj_pkl is None):
        raise ValueError("pass exactly one of distances= (CSV) or adj_pkl= (DCRNN pickle)")
    frame = read_pandas_frame(h5_path, key)
    ids = [_id(c) for c in frame.columns]
    if distances is not None:
        w = gaussian_kernel_adjacency(ids, read_distances(distances), normalized_k)
        graph_src = {"distances": os.fspath(distances), "normalized_k": normalized_k}
    else:
        pkl_ids, w = load_adj_pickle(adj_pkl)
        if pkl_ids != ids:
            pos = {s: i for i, s in enumerate(pkl_ids)}
            missing = [s for s in ids if s not in pos]
            if missing:
                raise ValueError(f"{adj_pkl}: sensors {missing[:5]} of {h5_path} are not in the pickle")
            order = np.array([pos[s] for s in ids])
            w = w[np.ix_(order, order)]
        graph_src = {"adj_pkl": os.fspath(adj_pkl)}
    senders, receivers, weight = adjacency_to_edges(w, self_loops)
    step_ns = np.diff(frame.index_ns)
    if len(step_ns) == 0 or (step_ns != step_ns[0]).any() or step_ns[0] <= 0:
        raise ValueError(f"{h5_path}: timestamps are not evenly spaced and increasing; resample first")
    dt = step_ns[0] / 1e9
    vals = np.nan_to_num(frame.values, nan=0.0)
    speed = vals.astype(np.float32)[:, :, None]
    mask = (speed != 0) & np.isfinite(frame.values)[:, :, None]
    tod, dow = time_features(frame.index_ns)
    n_train, n_val, n_test = dcrnn_split_sizes(len(speed), input_steps, output_steps, fractions)
    win = input_steps + output_steps - 1
    sample_ranges = {
        "train": (0, n_train),
        "valid": (n_train, n_train + n_val),
        "test": (n_train + n_val, n_train + n_val + n_test),
    }
    config = {
        "source": os.fspath(h5_path),
        "key": frame.key,
        "sensor_ids": ids,
        "graph": graph_src,
        "self_loops": self_loops,
        "input_steps": input_steps,
        "output_steps": output_steps,
        "fractions": list(fractions),
        "samples": {"train": n_train, "valid": n_val, "test": n_test},
        "units": {"speed": "as in the source (mph for METR-LA / PEMS-BAY)", "dt": "s"},
    }
    out = Path(out_dir)
    statics = {"senders": senders, "receivers": receivers, "edge_weight": weight}
    for name, (a, b) in sample_ranges.items():
        s = slice(a, b + win)  # steps of samples a..b-1
        traj = {"speed": speed[s], "mask": mask[s], "time_of_day": tod[s], "day_of_week": dow[s], **statics}
        write_split(
            out / f"{name}.h5",
            [traj],
            SCHEMA,
            dt=dt,
            generator="gnnsim.data.convert.metr_la",
            config={**config, "split": name, "steps": [a, b + win]},
        )
    return config
