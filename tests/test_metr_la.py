"""METR-LA / PEMS-BAY reader on tiny files in the exact pandas fixed-format layout, and the sensor graph."""

import math
import os
import pickle

import h5py
import numpy as np
import pytest

from gnnsim.data.convert import metr_la
from gnnsim.data.format import Split
from gnnsim.eta.baselines import RealtimeSnapshot
from gnnsim.eta.benchmark import eval_speed_forecast, load_days

T0_NS = 1330560000 * 10**9  # 2012-03-01 00:00 (a Thursday), METR-LA's first timestamp
STEP_NS = 300 * 10**9


def write_pandas_frame(path, key, columns, index_ns, values, *, int_columns=False, index_kind="datetime64"):
    """Write a DataFrame the way pandas' HDFStore (PyTables) fixed format does, attribute for attribute.

    Layout as produced by ``DataFrame.to_hdf(path, key)`` (checked against pandas 3.1 / PyTables 3.11;
    old files such as metr-la.h5 say kind='datetime64' for ns, pandas 3 says 'datetime64[us]').
    """
    pytables = dict(
        CLASS=np.bytes_(b"ARRAY"),
        FLAVOR=np.bytes_(b"numpy"),
        TITLE=h5py.Empty("S1"),
        VERSION=np.bytes_(b"2.4"),
        transposed=np.uint8(1),
    )
    with h5py.File(path, "w") as f:
        f.attrs.update(
            CLASS=np.bytes_(b"GROUP"),
            PYTABLES_FORMAT_VERSION=np.bytes_(b"2.1"),
            TITLE=h5py.Empty("S1"),
            VERSION=np.bytes_(b"1.0"),
        )
        g = f.create_group(key)
        g.attrs.update(
            CLASS=np.bytes_(b"GROUP"),
            TITLE=h5py.Empty("S1"),
            VERSION=np.bytes_(b"1.0"),
            axis0_variety=np.bytes_(b"regular"),
            axis1_variety=np.bytes_(b"regular"),
            block0_items_variety=np.bytes_(b"regular"),
            encoding=np.bytes_(b"UTF-8"),
            errors=np.bytes_(b"strict"),
            nblocks=np.int64(1),
            ndim=np.int64(2),
            pandas_type=np.bytes_(b"frame"),
        )
        if int_columns:
            cols = np.array([int(c) for c in columns], dtype=np.int64)
            col_attrs = dict(pytables, kind=np.bytes_(b"integer"), name=np.bytes_(b"N."))
        else:
            cols = np.array([c.encode() for c in columns])  # fixed-length |S
            col_attrs = dict(
                pytables, kind=np.bytes_(b"string"), name=np.bytes_(b"N."), nan_rep=h5py.Empty("S1")
            )
        for name in ("axis0", "block0_items"):
            ds = g.create_dataset(name, data=cols)
            ds.attrs.update(col_attrs)
        unit = 1 if index_kind == "datetime64" else 1000  # stored ns or us
        ax1 = g.create_dataset("axis1", data=(np.asarray(index_ns) // unit).astype(np.int64))
        ax1.attrs.update(
            pytables,
            kind=np.bytes_(index_kind.encode()),
            name=np.bytes_(b"N."),
            index_class=np.bytes_(b"datetime"),
            freq=np.bytes_(b"cpandas._libs.tslibs.offsets\nMinute\np0\n(I5\nI00\ntp1\nRp2\n."),
        )
        vals = g.create_dataset("block0_values", data=np.asarray(values, dtype=np.float64))  # [time, columns]
        vals.attrs.update(pytables)


IDS = ["773869", "767541", "767542"]
VALUES = np.array([[60.0, 0.0, 55.5], [61.0, 40.0, 0.0], [62.0, 41.0, 57.0], [63.0, 42.0, 58.0]])


@pytest.mark.parametrize("int_columns,kind", [(False, "datetime64"), (True, "datetime64[us]")])
def test_read_pandas_frame_exact_layout(tmp_path, int_columns, kind):
    path = tmp_path / "x.h5"
    index = T0_NS + STEP_NS * np.arange(4)
    write_pandas_frame(
        path,
        "df" if not int_columns else "speed",
        IDS,
        index,
        VALUES,
        int_columns=int_columns,
        index_kind=kind,
    )
    frame = metr_la.read_pandas_frame(path)  # key auto-detected
    assert frame.columns == IDS
    np.testing.assert_array_equal(frame.index_ns, index)
    np.testing.assert_array_equal(frame.values, VALUES)


def test_read_pandas_frame_matches_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    idx = pd.date_range("2012-03-01", periods=4, freq="5min")
    pd.DataFrame(VALUES, index=idx, columns=IDS).to_hdf(tmp_path / "p.h5", key="df")
    frame = metr_la.read_pandas_frame(tmp_path / "p.h5", "df")
    assert frame.columns == IDS
    np.testing.assert_array_equal(frame.index_ns, idx.asi8 * (1000 if idx.unit == "us" else 1))
    np.testing.assert_array_equal(frame.values, VALUES)


def test_read_pandas_frame_names_the_bad_part(tmp_path):
    path = tmp_path / "bad.h5"
    write_pandas_frame(path, "df", IDS, T0_NS + STEP_NS * np.arange(4), VALUES)
    with h5py.File(path, "a") as f:
        del f["df/block0_values"]
        f["df"].create_dataset("block0_values", data=VALUES.T)  # wrong orientation
    with pytest.raises(ValueError, match=r"bad.h5:/df/block0_values: shape \[3, 4\], expected \[4, 3\]"):
        metr_la.read_pandas_frame(path)
    with h5py.File(path, "a") as f:
        f["df"].attrs["pandas_type"] = np.bytes_(b"frame_table")
    with pytest.raises(ValueError, match="expected one pandas frame group"):
        metr_la.read_pandas_frame(path)


def test_gaussian_kernel_by_hand(tmp_path):
    csv = tmp_path / "d.csv"
    # finite distances between known sensors: 0, 100, 100, 200, 300 -> mean 140, variance 10400
    csv.write_text(
        "from,to,cost\n773869,773869,0.0\n773869,767541,100.0\n767541,773869,100.0\n"
        "767541,767542,200.0\n767542,767541,300.0\n999999,773869,5.0\n"
    )
    w = metr_la.gaussian_kernel_adjacency(IDS, metr_la.read_distances(csv), normalized_k=0.1)
    e = math.exp(-(100.0**2) / 10400.0)  # 0.382; exp(-200^2/10400) = 0.021 < 0.1 -> 0
    expected = np.array([[1.0, e, 0.0], [e, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    s, r, wt = metr_la.adjacency_to_edges(w)
    assert s.tolist() == [0, 1] and r.tolist() == [1, 0]
    np.testing.assert_allclose(wt, [e, e], rtol=1e-6)


def _py2_pickle(ids, table, arr):
    """Hand-assemble a Python 2 protocol-2 pickle (str = SHORT_BINSTRING, numpy.core paths), like DCRNN's."""
    s = lambda b: b"U" + bytes([len(b)]) + b  # SHORT_BINSTRING
    out = b"\x80\x02](" + b"](" + b"".join(s(i.encode()) for i in ids) + b"e"
    out += b"}(" + b"".join(s(k.encode()) + b"K" + bytes([v]) for k, v in table.items()) + b"u"
    dtype = (
        b"cnumpy\ndtype\n"
        + s(b"f4")
        + b"K\x00K\x01\x87R(K\x03"
        + s(b"<")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    shape = b"K" + bytes([arr.shape[0]]) + b"K" + bytes([arr.shape[1]]) + b"\x86"
    out += (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + s(b"b")
        + b"\x87R"
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89"
        + s(arr.astype("<f4").tobytes())
        + b"tb"
    )
    return out + b"e."


def test_adj_pickle_plain_and_py2(tmp_path):
    adj = np.array([[1.0, 0.5, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    table = {k: i for i, k in enumerate(IDS)}
    for proto in (2, 5):
        p = tmp_path / f"adj{proto}.pkl"
        p.write_bytes(pickle.dumps([IDS, table, adj], protocol=proto))
        ids, w = metr_la.load_adj_pickle(p)
        assert ids == IDS
        np.testing.assert_array_equal(w, adj)
    p = tmp_path / "adj_py2.pkl"
    p.write_bytes(_py2_pickle(IDS, table, adj))
    ids, w = metr_la.load_adj_pickle(p)
    assert ids == IDS
    np.testing.assert_array_equal(w, adj)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_adj_pickle_refuses_code(tmp_path):
    target = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps([IDS, {}, _Evil(str(target))], protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load 'os.makedirs'") as info:
        metr_la.load_adj_pickle(p)
    assert "\n" not in str(info.value)
    assert not target.exists()
    p.write_bytes(pickle.dumps([IDS, {}, np.array([object()], dtype=object)[:0]], protocol=2))
    with pytest.raises(ValueError, match="not a plain pickle"):
        metr_la.load_adj_pickle(p)


def test_convert_dcrnn_splits(tmp_path):
    rng = np.random.default_rng(0)
    steps = 40
    values = rng.uniform(20, 70, (steps, 3)).round(1)
    values[5, 1] = 0.0  # missing
    index = T0_NS + STEP_NS * np.arange(steps)
    write_pandas_frame(tmp_path / "metr-la.h5", "df", IDS, index, values)
    (tmp_path / "d.csv").write_text(
        "from,to,cost\n773869,767541,100.0\n767541,767542,100.0\n767542,773869,300.0\n"
    )
    cfg = metr_la.convert(
        tmp_path / "metr-la.h5", tmp_path / "out", distances=tmp_path / "d.csv", input_steps=2, output_steps=2
    )
    # 37 samples: test round(7.4) = 7, train round(25.9) = 26, val 4
    assert cfg["samples"] == {"train": 26, "valid": 4, "test": 7}
    tr, va, te = (Split(tmp_path / "out" / f"{s}.h5") for s in ("train", "valid", "test"))
    assert [tr.num_steps(0), va.num_steps(0), te.num_steps(0)] == [29, 7, 10]
    np.testing.assert_array_equal(te.read(0, "speed")[:, :, 0], values[30:40].astype(np.float32))
    mask = tr.read(0, "mask")[:, :, 0]
    assert not mask[5, 1] and mask.sum() == 29 * 3 - 1
    tod, dow = tr.read(0, "time_of_day"), tr.read(0, "day_of_week")
    np.testing.assert_allclose(tod[:3], [0.0, 300 / 86400, 600 / 86400], rtol=1e-6)
    assert (dow == 3).all()  # Thursday
    # sigma = std(100, 100, 300) = 94.28; 100 -> exp(-1.125) = 0.325 kept, 300 -> 0
    assert tr.read(0, "senders").tolist() == [0, 1] and tr.read(0, "receivers").tolist() == [1, 2]
    np.testing.assert_allclose(tr.read(0, "edge_weight"), math.exp(-1.125), rtol=1e-5)
    # the protocol's forecast origins inside each split are exactly DCRNN's samples
    for name, n in cfg["samples"].items():
        days, _ = load_days(tmp_path / "out" / f"{name}.h5")
        res = eval_speed_forecast(days, RealtimeSnapshot(np.zeros(3), max_age=3), 2, 2, horizons=(1, 2))
        assert days[0].num_steps == n + 3  # origins k0 = 2 .. n + 1, horizon-1 targets = intervals 2 .. n + 1
        assert res["h=1"]["count"] == int(days[0].mask[2 : n + 2].sum())
