"""Physical checks of the flag simulator on small meshes: rest, bounded energy, pinned handles, seeds."""

import dataclasses
import json

import numpy as np
import pytest

from gnnsim.data.format import Split
from gnnsim.graph import NodeType
from gnnsim.solvers.cloth import (
    CLOTH_SCHEMA,
    GENERATOR,
    ClothConfig,
    Wind,
    flag_mesh,
    flag_model,
    generate,
    simulate_flag,
    simulate_trajectory,
    split_seeds,
    triangle_areas,
)

# A 1 m x 0.6 m flag of 150 nodes.
SMALL = dict(num_nodes=(150, 150), width=(1.0, 1.0), height=(0.6, 0.6))


def mechanical_energy(traj: dict, cfg: ClothConfig) -> np.ndarray:
    """Return kinetic (from frame differences) + gravitational + elastic energy of frames 1.., `[T-1]`."""
    pos = traj["world_pos"].astype(np.float64)  # [T, N, 3]
    model = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg)
    vel = np.diff(pos, axis=0) / cfg.dt  # [T-1, N, 3]
    kinetic = 0.5 * (model.mass * (vel**2).sum(-1)).sum(-1)
    gravitational = cfg.gravity * (model.mass * pos[1:, :, 2]).sum(-1)
    return kinetic + gravitational + model.energy(pos[1:])


def test_mesh_covers_the_rectangle_with_ccw_triangles_and_pole_nodes():
    mesh_pos, cells = flag_mesh(1.5, 0.9, 400, 0.3, np.random.default_rng(3))
    e1 = mesh_pos[cells[:, 1]] - mesh_pos[cells[:, 0]]
    e2 = mesh_pos[cells[:, 2]] - mesh_pos[cells[:, 0]]
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0).all()
    assert triangle_areas(mesh_pos, cells).sum() == pytest.approx(1.5 * 0.9, rel=1e-12)
    assert mesh_pos.min(0) == pytest.approx([0, 0]) and mesh_pos.max(0) == pytest.approx([1.5, 0.9])
    assert 350 <= len(mesh_pos) <= 450
    pole = np.sort(mesh_pos[mesh_pos[:, 0] == 0, 1])
    assert pole[0] == 0 and pole[-1] == 0.9 and len(pole) >= 10


def test_bending_vanishes_on_rigid_flat_sheets_and_matches_a_rolled_cylinder():
    cfg = ClothConfig(stiffness=1e-9, bending=0.05)
    rng = np.random.default_rng(0)
    mesh_pos, cells = flag_mesh(1.0, 0.6, 600, 0.3, rng)
    model = flag_model(mesh_pos, cells, cfg)
    flat = np.stack([mesh_pos[:, 0], np.zeros(len(mesh_pos)), mesh_pos[:, 1]], axis=1)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert model.energy(flat @ rotation.T + [0.3, -2.0, 1.0]) == pytest.approx(0, abs=1e-10)
    # Rolling about the v axis into curvature k is isometric: only bending, B/2 k^2 per area.
    k = 1.5
    u = mesh_pos[:, 0]
    rolled = np.stack([np.sin(k * u) / k, (1 - np.cos(k * u)) / k, mesh_pos[:, 1]], axis=1)
    assert model.energy(rolled) == pytest.approx(0.5 * cfg.bending * k**2 * 0.6, rel=0.15)


def test_lumped_masses_add_up_to_the_sheet_mass():
    cfg = ClothConfig(density=0.3)
    mesh_pos, cells = flag_mesh(2.0, 1.0, 300, 0.2, np.random.default_rng(1))
    assert flag_model(mesh_pos, cells, cfg).mass.sum() == pytest.approx(0.3 * 2.0, rel=1e-12)


def test_flag_in_still_air_comes_to_rest_hanging_from_the_pole():
    cfg = ClothConfig(**SMALL, num_steps=500, wind_speed=(0.0, 0.0), damping=3.0, bending=0.003)
    traj = simulate_trajectory(0, cfg)
    pos = traj["world_pos"].astype(np.float64)  # [T, N, 3]
    handle = traj["node_type"] == NodeType.HANDLE
    mass = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg).mass
    final_speed = np.linalg.norm(pos[-1] - pos[-2], axis=-1).max() / cfg.dt
    assert final_speed < 5e-3
    assert (pos[-1, ~handle, 2] < pos[-1, handle, 2].max()).all()
    centre = mass @ pos[-1] / mass.sum()
    assert centre[2] < 0.25 * 0.6  # the pole's middle is at 0.3
    assert np.hypot(centre[0], centre[1]) < 0.25 * 1.0  # it was at 0.5 when flat


def test_windy_flag_keeps_energy_and_stretch_bounded():
    cfg = ClothConfig(**SMALL, num_steps=1000, wind_speed=(10.0, 12.0))
    traj = simulate_trajectory(1, cfg)
    energy = mechanical_energy(traj, cfg)
    mass = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg).mass.sum()
    start = cfg.gravity * mass * traj["mesh_pos"][:, 1].mean()  # roughly the flat sheet's energy
    fastest = cfg.wind_speed[1] * (1 + cfg.gust[1] + cfg.turbulence[1])
    # The wind cannot drive the sheet as a whole faster than itself, and nothing grows over the 20 s.
    assert np.isfinite(energy).all()
    assert energy.max() - start < 0.5 * mass * fastest**2
    half = len(energy) // 2
    assert energy[half:].max() - start < 2 * (energy[:half].max() - start)
    model = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg)
    assert np.abs(model.strain(traj["world_pos"].astype(np.float64))).max() < 0.1


def test_strong_wind_along_the_flag_holds_it_out_from_the_pole():
    cfg = ClothConfig(**SMALL, num_steps=300, wind_speed=(10.0, 12.0), wind_angle=(0.0, 0.0), wind_wander=0.0)
    traj = simulate_trajectory(3, cfg)
    mass = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg).mass
    centre = mass @ traj["world_pos"][150:].astype(np.float64) / mass.sum()  # [T/2, 3] over the last 3 s
    # Flat and spread, the centre is at (0.5, 0, 0.3); hanging in still air it sinks to x ~ 0.25, z ~ 0.17.
    assert (centre[:, 0] > 0.45).all() and (np.abs(centre[:, 1]) < 0.1).all() and (centre[:, 2] > 0.25).all()


def test_flag_without_pole_nodes_is_refused():
    mesh_pos, cells = flag_mesh(1.0, 0.5, 30, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="expected nodes on the pole"):
        simulate_flag(mesh_pos + [0.1, 0.0], cells, None, ClothConfig())


def test_handles_stay_on_the_pole_and_types_are_set():
    traj = simulate_trajectory(2, ClothConfig(**SMALL, num_steps=100))
    handle = traj["node_type"] == NodeType.HANDLE
    assert set(np.unique(traj["node_type"])) == {NodeType.NORMAL, NodeType.HANDLE}
    assert (traj["mesh_pos"][handle, 0] == 0).all() and (traj["mesh_pos"][~handle, 0] > 0).all()
    assert (traj["world_pos"][:, handle] == traj["world_pos"][0, handle]).all()
    assert np.abs(traj["world_pos"][-1, ~handle] - traj["world_pos"][0, ~handle]).max() > 0.1


def test_first_frame_is_the_flat_sheet_and_arrays_follow_the_schema():
    cfg = ClothConfig(**SMALL, num_steps=20, ripple=0.0)
    traj = simulate_trajectory(5, cfg)
    for name, spec in CLOTH_SCHEMA.items():
        assert traj[name].dtype == np.dtype(spec.dtype), name
    assert traj["world_pos"].shape == (20, len(traj["mesh_pos"]), 3)
    mesh_pos = traj["mesh_pos"]
    flat = np.stack([mesh_pos[:, 0], np.zeros(len(mesh_pos)), mesh_pos[:, 1]], axis=1)
    np.testing.assert_array_equal(traj["world_pos"][0], flat)


def test_warmup_stores_the_tail_of_the_same_longer_run():
    long = simulate_trajectory(3, ClothConfig(**SMALL, num_steps=30))
    warm = simulate_trajectory(3, ClothConfig(**SMALL, num_steps=20, warmup=10 * ClothConfig.dt))
    np.testing.assert_array_equal(warm["world_pos"], long["world_pos"][10:])
    assert not np.allclose(warm["world_pos"][0], long["world_pos"][0])


def test_stored_wind_is_the_field_at_each_frames_positions_and_time():
    cfg = ClothConfig(**SMALL, num_steps=12, warmup=5 * ClothConfig.dt, turbulence=(0.2, 0.2))
    rng = np.random.default_rng(4)
    mesh_pos, cells = flag_mesh(1.0, 0.6, 150, cfg.jitter, rng)
    wind = Wind.sample(cfg, rng)
    traj = simulate_flag(mesh_pos, cells, wind, cfg)
    assert traj["wind"].shape == traj["world_pos"].shape
    for f in (0, 7, 11):
        expected = wind(traj["world_pos"][f].astype(np.float64), (5 + f) * cfg.dt)  # [N, 3]
        np.testing.assert_allclose(traj["wind"][f], expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(traj["wind"][0], axis=0).max() > 0.1  # turbulence: the wind differs across the sheet


def test_same_seed_gives_identical_arrays_and_another_seed_differs():
    cfg = ClothConfig(**SMALL, num_steps=60)
    a, b, c = simulate_trajectory(7, cfg), simulate_trajectory(7, cfg), simulate_trajectory(8, cfg)
    for name in CLOTH_SCHEMA:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["world_pos"][-1], c["world_pos"][-1])


def test_generated_splits_read_back_with_their_config(tmp_path):
    cfg = ClothConfig(num_nodes=(40, 60), width=(0.6, 0.8), height=(0.4, 0.5), num_steps=10)
    paths = generate(tmp_path, cfg, splits={"train": 2, "valid": 1}, seed=11)
    assert set(paths) == {"train", "valid"}
    split = Split(paths["train"])
    assert len(split) == 2 and split.num_steps(0) == 10
    assert split.dt == cfg.dt and split.generator == GENERATOR
    assert split.config == json.loads(json.dumps({**dataclasses.asdict(cfg), "seed": 11, "split": "train"}))
    expected = simulate_trajectory(split_seeds(11, "train", 2)[1], cfg)
    for name in CLOTH_SCHEMA:
        np.testing.assert_array_equal(split.read(1, name), expected[name])
    assert split_seeds(11, "train", 1) != split_seeds(11, "valid", 1)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("num_steps", 0, "an integer >= 1"),
        ("dt", -0.01, "a number > 0"),
        ("width", (2.0, 1.0), "0 < lo <= hi"),
        ("num_nodes", (100.5, 200), "ints"),
        ("gust", (0.0, 1.0), "hi < 1"),
        ("jitter", 0.5, "[0, 0.4]"),
        ("warmup", -1.0, "a number >= 0"),
        ("substeps", 1, "an integer >= 3"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_field(field, value, expected):
    with pytest.raises(ValueError) as info:
        ClothConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"ClothConfig.{field}: expected") and expected in message
    assert "\n" not in message


def test_bad_split_size_fails(tmp_path):
    with pytest.raises(ValueError, match=r"splits\['train'\]: expected an integer >= 0"):
        generate(tmp_path, ClothConfig(**SMALL, num_steps=2), splits={"train": -1})


@pytest.mark.slow
def test_default_flag_trajectory_is_bounded():
    cfg = ClothConfig()
    for seed in (0, 1):
        traj = simulate_trajectory(seed, cfg)
        assert 1250 <= len(traj["mesh_pos"]) <= 1750
        model = flag_model(traj["mesh_pos"].astype(np.float64), traj["cells"], cfg)
        assert np.abs(model.strain(traj["world_pos"].astype(np.float64))).max() < 0.2
        energy = mechanical_energy(traj, cfg)
        assert np.isfinite(energy).all() and energy.max() - energy.min() < 0.5 * model.mass.sum() * 20.0**2
