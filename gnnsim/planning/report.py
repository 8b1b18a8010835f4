"""Benchmark artifacts: results JSON, markdown tables (success, world-model error), a success-vs-distance
plot, and a maze picture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from gnnsim.files import save_figure, write_text_atomic


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """Return a markdown table: one row per method, one column per distance bucket (steps)."""
    labels = list(next(iter(table.values())))
    lines = ["| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{row[b]:.2f}" for b in labels) + " |" for m, row in table.items()]
    return "\n".join(lines) + "\n"


def world_model_table(runs: list[dict]) -> str:
    """Return a markdown table of each seed's world-model fit time, RMSE (cells) and push misses, next to the
    wall-free baseline's."""
    steps = runs[0]["world_model"]["rollout_steps"]
    lines = ["| seed | fit (s) | 1-step RMSE | wall-free 1-step | "
             f"{steps}-step RMSE | wall-free {steps}-step | {steps}-step push miss | wall-free push miss |",
             "|---" * 8 + "|"]
    for r in runs:
        e = r["world_model"]
        lines.append(f"| {r['seed']} | {e['fit_seconds']:.0f} | {e['one_step']:.4f} | "
                     f"{e['baseline_one_step']:.4f} | {e['rollout']:.3f} | {e['baseline_rollout']:.3f} | "
                     f"{e['push_miss']:.3f} | {e['baseline_push_miss']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, cfg, runs: list[dict], table: dict[str, dict[str, float]]) -> None:
    """Write report.json (`{method: {bucket: success rate}}`), results.json, table.md (success; world-model
    errors when learned), success_vs_distance.png and maze_landmarks.png into `out_dir`, each atomically.

    Args:
        out_dir: output folder, created if missing.
        cfg: the `PlanningConfig` of the run (stored in results.json).
        runs: per-seed outputs of `run_seed`.
        table: `{method: {bucket: success rate}}` over seeds.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = {m: {str(r["seed"]): [float(r["success"][m][r["bucket"] == b].mean())
                                     for b in range(len(r["edges"]) - 1)] for r in runs} for m in table}
    results = {
        "success": table,
        "per_seed": per_seed,
        "bucket_edges_steps": [float(e) for e in runs[0]["edges"]],
        "pairs_per_bucket": [int((runs[0]["bucket"] == b).sum()) for b in range(len(runs[0]["edges"]) - 1)],
        "seconds": {str(r["seed"]): r["seconds"] for r in runs},
        "world_model": {str(r["seed"]): r["world_model"] for r in runs},
        "landmarks": {str(r["seed"]): int(len(r["l3p_graph"].landmarks)) for r in runs if "l3p_graph" in r},
        "final_train_success": {str(r["seed"]): r["train_log"][-1]["train_success"] for r in runs},
        "config": dataclasses.asdict(cfg),
    }
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out_dir / "report.json", json.dumps(table, indent=2) + "\n")
    learned = bool(runs[0]["world_model"])
    tables = markdown_table(table) + ("\n" + world_model_table(runs) if learned else "")
    write_text_atomic(out_dir / "table.md", tables)
    save_figure(plot_success(table, runs[0]["edges"]), out_dir / "success_vs_distance.png", dpi=120)
    if "l3p_graph" in runs[0]:
        save_figure(plot_maze(runs[0]), out_dir / "maze_landmarks.png", dpi=120)


def plot_success(table: dict[str, dict[str, float]], edges: np.ndarray) -> Figure:
    """Return a figure of success rate against bucket-centre shortest-path distance, one line per method."""
    centres = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    styles = ["o-", "s-", "^-", "x--", "d-."]  # distinct markers: equal curves stay visible
    for (method, row), style in zip(table.items(), styles * len(table)):
        ax.plot(centres, list(row.values()), style, label=method, ms=7, alpha=0.85)
    ax.set_xlabel("shortest-path distance to goal (steps)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_maze(run: dict) -> Figure:
    """Return a picture of the maze with L3P landmarks, kept graph edges, and one planned episode."""
    maze, graph = run["maze"], run["l3p_graph"]
    h, w = maze.shape
    fig = Figure(figsize=(5, 5 * h / w + 0.4))
    ax = fig.add_subplot()
    ax.imshow(maze.walls, origin="lower", extent=(0, w, 0, h), cmap="Greys", vmin=0, vmax=1.5)
    lm = graph.landmarks
    i, j = np.nonzero(np.isfinite(graph.weights) & (np.arange(len(lm))[:, None] < np.arange(len(lm))))
    ax.add_collection(LineCollection(np.stack([lm[i], lm[j]], axis=1), colors="tab:blue", alpha=0.3, lw=0.7,
                                     label="kept edges (drawn straight)"))
    ax.scatter(lm[:, 0], lm[:, 1], s=14, c="tab:blue", zorder=3, label="landmarks")
    if "l3p_episode" in run:
        ep = run["l3p_episode"]
        k = ep["index"]
        ax.plot(*ep["states"].T, c="tab:orange", lw=1.2, label="L3P trajectory")
        ax.plot(*ep["subgoals"].T, "o--", c="tab:red", ms=4, lw=1, label="chosen subgoals")
        ax.scatter(*run["starts"][k], marker="s", c="k", zorder=4, label="start")
        ax.scatter(*run["goals"][k], marker="*", s=120, c="gold", edgecolors="k", zorder=4, label="goal")
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_aspect("equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=7, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
