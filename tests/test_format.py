import h5py
import numpy as np
import pytest

from conftest import FLOW_TEST_SCHEMA, synthetic_flow_trajectory, write_synthetic_flow
from gnnsim.data.format import FormatError, Split, write_split


def test_write_then_read_is_identical(tmp_path):
    trajs = [synthetic_flow_trajectory(6, seed=s) for s in range(2)]
    path = write_split(tmp_path / "a.h5", trajs, FLOW_TEST_SCHEMA, dt=0.02, generator="test", config={"k": 1})
    split = Split(path)
    assert len(split) == 2 and split.dt == 0.02 and split.config == {"k": 1}
    for i, traj in enumerate(trajs):
        for name, arr in traj.items():
            np.testing.assert_array_equal(split.read(i, name), arr)
    np.testing.assert_array_equal(split.read(1, "velocity", slice(2, 4)), trajs[1]["velocity"][2:4])


def test_dynamic_fields_are_chunked_by_step(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 6)
    with h5py.File(path) as f:
        assert f["traj_000000/velocity"].chunks[0] == 1


def test_missing_field_names_file_trajectory_and_field(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 2, 4)
    with h5py.File(path, "a") as f:
        del f["traj_000001/pressure"]
    with pytest.raises(FormatError, match=r"a\.h5: traj_000001: missing field 'pressure'"):
        Split(path)


def test_wrong_shape_is_reported(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 4)
    with h5py.File(path, "a") as f:
        del f["traj_000000/velocity"]
        f["traj_000000/velocity"] = np.zeros((4, 45, 3), np.float32)
    with pytest.raises(FormatError, match=r"traj_000000: field 'velocity' has shape \[4, 45, 3\], expected dims"):
        Split(path)


def test_inconsistent_node_count_is_reported(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 4)
    with h5py.File(path, "a") as f:
        del f["traj_000000/pressure"]
        f["traj_000000/pressure"] = np.zeros((4, 44, 1), np.float32)
    with pytest.raises(FormatError, match="field 'pressure' has nodes=44, but another field has nodes=45"):
        Split(path)


def test_nan_is_refused_on_read_naming_the_field(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 4)
    with h5py.File(path, "a") as f:
        f["traj_000000/velocity"][2, 3, 0] = np.nan
    split = Split(path)
    with pytest.raises(FormatError, match="traj_000000: field 'velocity' contains NaN"):
        split.read(0, "velocity")


def test_unknown_node_type_is_refused_on_read(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 4)
    with h5py.File(path, "a") as f:
        f["traj_000000/node_type"][7] = 9  # NodeType.SIZE: one past the last type
    with pytest.raises(FormatError, match=r"traj_000000: field 'node_type' has values \[9\] outside \[0, 9\)"):
        Split(path).read(0, "node_type")


def test_nan_is_refused_on_write_and_existing_file_survives(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 1, 4)
    bad = synthetic_flow_trajectory(4)
    bad["velocity"][0, 0, 0] = np.nan
    with pytest.raises(FormatError, match="trajectory 0: field 'velocity' contains NaN"):
        write_split(path, [bad], FLOW_TEST_SCHEMA, dt=0.02, generator="t")
    assert len(Split(path)) == 1  # the earlier complete file is untouched
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file_is_reported(tmp_path):
    path = write_synthetic_flow(tmp_path / "a.h5", 2, 6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"a\.h5"):
        Split(path).read(1, "velocity")


def test_not_a_gnnsim_file(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["a"] = 1
    with pytest.raises(FormatError, match="root attribute 'format_version' is missing"):
        Split(path)
