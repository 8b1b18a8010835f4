"""Self-describing checkpoints: written atomically, read without unpickling arbitrary objects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gnnsim.files import atomic_path
from gnnsim.simulators import Simulator, build_simulator

REQUIRED_KEYS = ("simulator", "state_dict", "step")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) to ``path`` via a temporary file and rename."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code runs) and check its keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (train first with gnnsim-train)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or non-weights files
        raise ValueError(f"{path}: not a readable gnnsim checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}; expected keys {list(REQUIRED_KEYS)}")
    return payload


def simulator_from_checkpoint(payload: dict[str, Any]) -> Simulator:
    """Rebuild the simulator a checkpoint describes and load its weights and normaliser statistics."""
    spec = payload["simulator"]
    sim = build_simulator(spec["domain"], spec["model"], spec.get("params"))
    sim.load_state_dict(payload["state_dict"])
    return sim.eval()
