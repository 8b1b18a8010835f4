"""DeepMind TFRecord converter: CRC32C, TFRecord framing, Example parsing, exact round trips, one-line errors."""

import copy
import json
import os
import random
import struct

import numpy as np
import pytest
from tfrecord_fixtures import (
    META,
    STEPS,
    bytes_feature,
    example,
    frame,
    length_delimited,
    raw_le,
    trajectory,
    trajectory_record,
    varint,
    write_dataset,
    write_tfrecord,
)

from gnnsim.data.convert.tfrecord import (
    GENERATOR,
    convert_dataset,
    convert_split,
    read_meta,
    read_trajectories,
    schema_from_meta,
)
from gnnsim.data.convert.tfrecord_io import (
    _crc32c_numpy,
    _crc32c_python,
    crc32c,
    masked_crc32c,
    parse_example,
    read_records,
)
from gnnsim.data.format import FormatError, Split, dynamic, static

NODES = {"train": [7, 9], "valid": [5], "test": [6, 8]}


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --- CRC32C -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),
        (b"The quick brown fox jumps over the lazy dog", 0x22620404),
        (b"\x00" * 32, 0x8A9136AA),  # RFC 3720, B.4
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720, B.4
        (bytes(range(32)), 0x46DD794E),  # RFC 3720, B.4
    ],
)
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected
    assert _crc32c_python(data) == expected
    assert _crc32c_numpy(data) == expected


def test_masked_crc32c_known_vector():
    # The value TFRecord writers store for these bytes (as in tfrecord_slow's tests).
    assert masked_crc32c(b"1234567890asdfghjkl") == 4134599430


@pytest.mark.parametrize("n", [1, 3, 4, 63, 64, 65, 2047, 2049, 4096, 4097, 65536 + 13, 200_003])
def test_crc32c_numpy_lanes_equal_reference(n):
    rng = random.Random(n)
    data = rng.randbytes(n)
    start = rng.getrandbits(32)
    assert _crc32c_numpy(data, start) == _crc32c_python(data, start)
    cut = n // 3
    assert crc32c(data) == crc32c(data[cut:], crc32c(data[:cut]))


# --- TFRecord framing and tf.train.Example ------------------------------------------------------------------


def test_read_records_round_trip(tmp_path):
    records = [b"", b"x", random.Random(0).randbytes(50_000), b"last"]  # the large one takes the numpy path
    path = write_tfrecord(tmp_path / "r.tfrecord", records)
    assert list(read_records(path)) == records
    assert list(read_records(write_tfrecord(tmp_path / "empty.tfrecord", []))) == []


def test_parse_example_all_list_kinds():
    floats = np.array([1.5, -2.0, 3.25], np.float32)
    ints = [0, 1, -1, 2**62, -(2**63)]
    float_unpacked = b"".join(varint(1 << 3 | 5) + struct.pack("<f", x) for x in floats)
    int_packed = length_delimited(1, b"".join(varint(i) for i in ints))
    unknown = varint(7 << 3 | 0) + varint(300)  # unknown fields are skipped
    data = example(
        {
            "b": bytes_feature(b"ab", b"", b"cd"),
            "fp": length_delimited(2, length_delimited(1, raw_le(floats))),
            "fu": length_delimited(2, float_unpacked),
            "i": length_delimited(3, int_packed),
            "iu": length_delimited(3, b"".join(varint(1 << 3 | 0) + varint(i) for i in ints)),
        }
    )
    f = parse_example(unknown + data)
    assert f["b"].kind == "bytes_list" and [bytes(v) for v in f["b"].values] == [b"ab", b"", b"cd"]
    for k in ("fp", "fu"):
        assert f[k].kind == "float_list" and f[k].values.dtype == np.float32
        np.testing.assert_array_equal(f[k].values, floats)
    for k in ("i", "iu"):
        assert f[k].kind == "int64_list"
        assert f[k].values.tolist() == ints


def test_parse_example_rejects_truncated_bytes():
    data = example({"x": bytes_feature(b"0123456789")})
    with pytest.raises(ValueError, match="claims"):
        parse_example(data[:-3])


# --- schema from meta.json ----------------------------------------------------------------------------------


def test_schema_from_meta_follows_gnnsim_conventions():
    assert schema_from_meta(META) == {
        "cells": static("int32", "cells", 3),
        "mesh_pos": static("float32", "nodes", 2),
        "node_type": static("int32", "nodes"),
        "velocity": dynamic("float32", "nodes", 2),
        "pressure": dynamic("float32", "nodes", 1),
    }


# --- conversion ---------------------------------------------------------------------------------------------


def expected_gnnsim(traj):
    """Map a trajectory in DeepMind's layout to gnnsim's: drop the static leading 1, squeeze node_type."""
    return {
        "cells": traj["cells"][0],
        "mesh_pos": traj["mesh_pos"][0],
        "node_type": traj["node_type"][0, :, 0],
        "velocity": traj["velocity"],
        "pressure": traj["pressure"],
    }


def test_convert_dataset_round_trips_exactly(tmp_path):
    source = write_dataset(tmp_path / "src", NODES)
    paths = convert_dataset(tmp_path / "src", tmp_path / "dst")
    assert paths == {s: tmp_path / "dst" / f"{s}.h5" for s in ("train", "valid", "test")}
    for split, trajs in source.items():
        data = Split(paths[split])
        assert len(data) == len(trajs)
        assert data.dt == META["dt"] and data.generator == GENERATOR
        assert data.config["meta"] == json.loads(json.dumps(META)) and data.config["split"] == split
        assert data.schema == schema_from_meta(META)
        for i, traj in enumerate(trajs):
            assert data.num_steps(i) == STEPS
            got = data.trajectory(i)
            for name, want in expected_gnnsim(traj).items():
                assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
                np.testing.assert_array_equal(got[name], want, err_msg=name)
        data.close()


def test_convert_split_limit_and_names(tmp_path):
    source = write_dataset(tmp_path / "src", {"train": [5, 6, 7]})
    path = convert_split(tmp_path / "src", "train", tmp_path / "out" / "small.h5", limit=2)
    data = Split(path)
    assert len(data) == 2 and data.config["limit"] == 2
    np.testing.assert_array_equal(data.read(1, "velocity"), source["train"][1]["velocity"])
    data.close()
    with pytest.raises(FileNotFoundError, match="valid.tfrecord"):
        convert_dataset(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()  # nothing converted when a split is missing


def test_read_trajectories_concatenates_multi_value_bytes_list(tmp_path):
    traj = trajectory(np.random.default_rng(1), 6)
    features = {k: bytes_feature(raw_le(v)) for k, v in traj.items()}
    raw = raw_le(traj["velocity"])
    features["velocity"] = bytes_feature(raw[:20], raw[20:])
    path = write_tfrecord(tmp_path / "train.tfrecord", [example(features)])
    (got,) = read_trajectories(path, META)
    np.testing.assert_array_equal(got["velocity"], traj["velocity"])


# --- errors: one line naming the file, the record and the field ---------------------------------------------


def write_records(tmp_path, records, meta=META):
    src = tmp_path / "src"
    src.mkdir()
    (src / "meta.json").write_text(json.dumps(meta))
    path = write_tfrecord(src / "train.tfrecord", records)
    return src, path


def good_records(n=2):
    rng = np.random.default_rng(0)
    return [trajectory_record(trajectory(rng, 6)) for _ in range(n)]


def convert_error(tmp_path, src, match):
    dst = tmp_path / "train.h5"
    with pytest.raises(FormatError, match=match) as excinfo:
        convert_split(src, "train", dst)
    assert not dst.exists() and not dst.with_name("train.h5.tmp").exists()
    return one_line_error(excinfo)


def test_bad_data_crc_names_file_and_record(tmp_path):
    src, path = write_records(tmp_path, good_records())
    raw = bytearray(path.read_bytes())
    raw[len(frame(good_records()[0])) + 12 + 40] ^= 0x01  # flip a bit inside record 1's data
    path.write_bytes(bytes(raw))
    msg = convert_error(tmp_path, src, "data CRC mismatch")
    assert str(path) in msg and "record 1" in msg


def test_bad_length_crc_names_file_and_record(tmp_path):
    src, path = write_records(tmp_path, good_records())
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))
    msg = convert_error(tmp_path, src, "length CRC mismatch")
    assert str(path) in msg and "record 0" in msg


@pytest.mark.parametrize("cut", [3, 40, 1000])
def test_truncated_file_names_file_and_record(tmp_path, cut):
    records = good_records()
    src, path = write_records(tmp_path, records)
    size = len(frame(records[0])) + len(frame(records[1]))
    os.truncate(path, size - cut if cut < 1000 else len(frame(records[0])) + 5)  # in data / in header
    msg = convert_error(tmp_path, src, "truncated")
    assert str(path) in msg and "record 1" in msg


def test_missing_field_names_file_record_and_field(tmp_path):
    traj = trajectory(np.random.default_rng(0), 6)
    del traj["pressure"]
    src, path = write_records(tmp_path, [good_records(1)[0], trajectory_record(traj)])
    msg = convert_error(tmp_path, src, "missing feature 'pressure'")
    assert str(path) in msg and "record 1" in msg and "[4, -1, 1]" in msg and "velocity" in msg


def test_size_not_divisible_names_file_record_and_field(tmp_path):
    traj = trajectory(np.random.default_rng(0), 6)
    features = {k: bytes_feature(raw_le(v)) for k, v in traj.items()}
    features["velocity"] = bytes_feature(raw_le(traj["velocity"]) + b"\0" * 4)  # one float too many
    src, path = write_records(tmp_path, [example(features)])
    msg = convert_error(tmp_path, src, "feature 'velocity' holds 49 float32 values")
    assert str(path) in msg and "record 0" in msg and "multiple of 8" in msg
    features["velocity"] = bytes_feature(raw_le(traj["velocity"]) + b"\0")  # not whole float32s
    path.write_bytes(frame(example(features)))
    convert_error(tmp_path, src, "record 0: feature 'velocity' has 193 bytes")


def test_node_count_mismatch_names_record_and_field(tmp_path):
    rng = np.random.default_rng(0)
    traj = trajectory(rng, 6)
    traj["pressure"] = trajectory(rng, 7)["pressure"]
    src, path = write_records(tmp_path, [trajectory_record(traj)])
    msg = convert_error(tmp_path, src, "field 'pressure' has nodes=7")
    assert str(path) in msg and "record 0" in msg


def test_meta_errors_are_one_line(tmp_path):
    meta = copy.deepcopy(META)
    meta["features"]["world_pos"] = {"type": "dynamic_varlen", "shape": [-1, 3], "dtype": "float32"}
    src, _ = write_records(tmp_path, good_records(1), meta)
    with pytest.raises(FormatError, match="'world_pos' is 'dynamic_varlen'") as excinfo:
        read_meta(src)
    assert str(src / "meta.json") in one_line_error(excinfo)
    meta = copy.deepcopy(META)
    meta["features"]["mesh_pos"]["shape"] = [2, -1, 2]
    (src / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"'mesh_pos' has static shape \[2, -1, 2\], expected \[1, -1, F...\]"):
        read_meta(src)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        read_meta(tmp_path)
