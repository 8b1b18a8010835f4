"""Pictures of rollouts: animations (truth | prediction | |error|), error-vs-step plots, XDMF for ParaView."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.tri import Triangulation  # noqa: E402

from gnnsim.data.format import Split  # noqa: E402
from gnnsim.files import atomic_path, save_figure, write_text_atomic  # noqa: E402
from gnnsim.rollout import PRED_PREFIX  # noqa: E402


def frame_indices(num_steps: int, frames: int) -> np.ndarray:
    """Return up to ``frames`` evenly spaced step indices in [0, num_steps)."""
    return np.unique(np.linspace(0, num_steps - 1, min(frames, num_steps)).round().astype(int))


def figure_to_array(fig) -> np.ndarray:
    """Rasterise a matplotlib figure to an RGB array [H, W, 3]."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_animation(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """Write RGB frames as a GIF or MP4 (by suffix), atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
        else:
            iio.imwrite(tmp, np.stack(frames), extension=path.suffix, fps=fps, codec="libx264")
    return path


def animate_mesh_field(
    rollout: Split, trajectory: int, field: str, frames: int = 100
) -> list[np.ndarray]:
    """Render truth | prediction | |error| of the magnitude of a 2D mesh field, one image per frame.

    Args:
        rollout: a rollout file (``gnnsim-rollout`` output) with ``mesh_pos``, ``cells``, ``field`` and
            ``pred_<field>``.
        trajectory: which trajectory.
        field: e.g. ``velocity``.
        frames: number of frames (evenly subsampled).

    Returns:
        RGB frames.
    """
    pos = rollout.read(trajectory, "mesh_pos")  # [N, 2]
    tri = Triangulation(pos[:, 0], pos[:, 1], rollout.read(trajectory, "cells"))
    truth = np.linalg.norm(rollout.read(trajectory, field), axis=-1)  # [T, N]
    pred = np.linalg.norm(rollout.read(trajectory, PRED_PREFIX + field), axis=-1)  # [T, N]
    err = np.linalg.norm(rollout.read(trajectory, field) - rollout.read(trajectory, PRED_PREFIX + field), axis=-1)
    vmax = float(truth.max())
    emax = max(float(np.percentile(err, 99.5)), 1e-6)
    span = np.ptp(pos, axis=0)
    width = 12.0
    fig, axes = plt.subplots(3, 1, figsize=(width, 3 * width * span[1] / span[0] + 1.2), dpi=80)
    artists = []
    for ax, data, title, lim, cmap in (
        (axes[0], truth, f"truth |{field}|", vmax, "viridis"),
        (axes[1], pred, f"prediction |{field}|", vmax, "viridis"),
        (axes[2], err, "|error|", emax, "magma"),
    ):
        art = ax.tripcolor(tri, data[0], vmin=0, vmax=lim, cmap=cmap, shading="gouraud")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_aspect("equal")
        ax.set_axis_off()
        fig.colorbar(art, ax=ax, fraction=0.02, pad=0.01)
        artists.append((art, data))
    fig.tight_layout()
    images = []
    for t in frame_indices(truth.shape[0], frames):
        for art, data in artists:
            art.set_array(data[t])
        fig.suptitle(f"step {t}", fontsize=9, x=0.98, ha="right")
        images.append(figure_to_array(fig))
    plt.close(fig)
    return images


def animate_cloth(rollout: Split, trajectory: int, frames: int = 100) -> list[np.ndarray]:
    """Render truth | prediction of a cloth rollout as 3D surfaces (prediction coloured by |error|).

    Args:
        rollout: a cloth rollout file with ``cells``, ``world_pos`` and ``pred_world_pos``.
        trajectory: which trajectory.
        frames: number of frames (evenly subsampled).
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    cells = rollout.read(trajectory, "cells")  # [C, 3]
    truth = rollout.read(trajectory, "world_pos")  # [T, N, 3]
    pred = rollout.read(trajectory, PRED_PREFIX + "world_pos")  # [T, N, 3]
    err = np.linalg.norm(pred - truth, axis=-1)[:, cells].mean(-1)  # [T, C]
    emax = max(float(np.percentile(err, 99.5)), 1e-6)
    lo, hi = truth.reshape(-1, 3).min(0), truth.reshape(-1, 3).max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05
    fig = plt.figure(figsize=(10, 5), dpi=80)
    panels = []
    for k, (data, title) in enumerate(((truth, "truth"), (pred, "prediction (colour: |error|)"))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=20, azim=-60)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        poly = Poly3DCollection(data[0][cells], linewidths=0.1, edgecolors="k")
        ax.add_collection3d(poly)
        panels.append((poly, data))
    cmap = plt.get_cmap("magma")
    images = []
    for t in frame_indices(truth.shape[0], frames):
        for k, (poly, data) in enumerate(panels):
            poly.set_verts(data[t][cells])
            poly.set_facecolor((0.55, 0.7, 0.9, 1.0) if k == 0 else cmap(np.clip(err[t] / emax, 0, 1)))
        fig.suptitle(f"step {t}", fontsize=9)
        images.append(figure_to_array(fig))
    plt.close(fig)
    return images


def plot_error_curve(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Plot the model's and the baseline's RMSE against rollout step from a metrics JSON; write a PNG."""
    metrics = json.loads(Path(metrics_path).read_text())
    out_path = Path(out_path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, style in (("rmse_per_step", "-"), *((k, "--") for k in metrics if k.endswith("_rmse_per_step") and k != "rmse_per_step")):
        curve = np.asarray(metrics[key], dtype=float)
        steps = np.arange(len(curve))[1:]
        label = "model" if key == "rmse_per_step" else key.removesuffix("_rmse_per_step").replace("_", " ")
        ax.plot(steps, curve[1:], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("rollout step")
    ax.set_ylabel(f"RMSE ({metrics.get('field', '')})")
    ax.set_title(f"{metrics.get('domain', '')} rollout error, {metrics.get('trajectories', '?')} trajectories")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out_path)


def write_xdmf(rollout: Split, trajectory: int, out_path: str | os.PathLike) -> Path:
    """Write an XDMF file that points ParaView at one trajectory of a rollout file (no data copied)."""
    out_path = Path(out_path)
    name = rollout.names[trajectory]
    src = os.path.relpath(rollout.path, out_path.parent)
    pos = rollout.read(trajectory, "mesh_pos")
    cells = rollout.read(trajectory, "cells")
    dyn = [f for f, s in rollout.schema.items() if s.kind == "dynamic"]
    steps = rollout.num_steps(trajectory)
    n = pos.shape[0]
    geometry = {2: "XY", 3: "XYZ"}[pos.shape[1]]
    lines = [
        '<?xml version="1.0" ?>',
        '<Xdmf Version="3.0"><Domain>',
        '<Grid Name="rollout" GridType="Collection" CollectionType="Temporal">',
    ]
    for t in range(steps):
        lines += [
            f'<Grid Name="step{t}" GridType="Uniform"><Time Value="{t * rollout.dt}"/>',
            f'<Topology TopologyType="Triangle" NumberOfElements="{cells.shape[0]}">'
            f'<DataItem Dimensions="{cells.shape[0]} 3" NumberType="Int" Format="HDF">{src}:/{name}/cells</DataItem></Topology>',
            f'<Geometry GeometryType="{geometry}"><DataItem Dimensions="{n} {pos.shape[1]}" NumberType="Float" '
            f'Format="HDF">{src}:/{name}/mesh_pos</DataItem></Geometry>',
        ]
        for f in dyn:
            width = rollout.schema[f].dims[-1] if len(rollout.schema[f].dims) == 3 else 1
            kind = "Vector" if width in (2, 3) else "Scalar"
            lines.append(
                f'<Attribute Name="{f}" AttributeType="{kind}" Center="Node">'
                f'<DataItem ItemType="HyperSlab" Dimensions="{n} {width}">'
                f'<DataItem Dimensions="3 3" Format="XML">{t} 0 0 1 1 1 1 {n} {width}</DataItem>'
                f'<DataItem Dimensions="{steps} {n} {width}" NumberType="Float" Format="HDF">{src}:/{name}/{f}</DataItem>'
                "</DataItem></Attribute>"
            )
        lines.append("</Grid>")
    lines += ["</Grid>", "</Domain></Xdmf>"]
    return write_text_atomic(out_path, "\n".join(lines) + "\n")
