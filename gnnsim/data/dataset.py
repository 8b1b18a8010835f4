"""Training samples from a split: windows of consecutive frames, batched by concatenating graphs."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gnnsim.data.format import FormatError, Split
from gnnsim.graph import cells_to_edges

Batch = dict[str, Tensor]


def graph_edges(split: Split, i: int) -> Tensor:
    """Return the directed edges [2, E] of trajectory ``i``: two-way edges of ``cells`` (meshes), or the stored
    ``senders``/``receivers`` (graphs such as road networks)."""
    if "cells" in split.schema:
        return cells_to_edges(torch.from_numpy(split.read(i, "cells")))
    if "senders" in split.schema and "receivers" in split.schema:
        return torch.from_numpy(np.stack([split.read(i, "senders"), split.read(i, "receivers")])).long()
    raise FormatError(f"{split.path}: neither 'cells' nor 'senders'/'receivers' is stored; the graph has no edges")


class FrameDataset(Dataset):
    """All windows of ``window`` consecutive frames of every trajectory in a split.

    Item ``k`` is a dict: static fields as stored, dynamic fields sliced to ``[window, ...]``, and
    ``edge_index`` [2, E]. Mesh topology is computed once per trajectory and cached per process.

    Args:
        split: the split (or its path).
        window: frames per sample (flow: 2 = input and target; cloth: 3).
        fields: fields to load (default: all but ``cells``).
    """

    def __init__(self, split: Split | str | os.PathLike, window: int, fields: Sequence[str] | None = None):
        self.split = split if isinstance(split, Split) else Split(split)
        self.window = window
        schema = self.split.schema
        self.fields = [f for f in (fields or schema) if f not in ("cells", "senders", "receivers")]
        missing = [f for f in self.fields if f not in schema]
        if missing:
            raise FormatError(f"{self.split.path}: missing field(s) {missing}; the simulator needs them")
        counts = np.array([max(self.split.num_steps(i) - window + 1, 0) for i in range(len(self.split))])
        if counts.sum() == 0:
            raise FormatError(f"{self.split.path}: no trajectory has {window} frames")
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._static_cache: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """Return (trajectory, first frame) of item ``k``."""
        i = int(np.searchsorted(self._offsets, k, side="right") - 1)
        return i, int(k - self._offsets[i])

    def _static(self, i: int) -> dict[str, Tensor]:
        if i not in self._static_cache:
            out = {f: torch.from_numpy(self.split.read(i, f)) for f in self.fields if self.split.schema[f].kind == "static"}
            out["edge_index"] = graph_edges(self.split, i)
            self._static_cache[i] = out
        return self._static_cache[i]

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        i, t = self.locate(k)
        sample = dict(self._static(i))
        for f in self.fields:
            if self.split.schema[f].kind == "dynamic":
                sample[f] = torch.from_numpy(self.split.read(i, f, slice(t, t + self.window)))
        return sample

    def node_dim(self, field: str) -> int | None:
        """Return the axis of ``field`` that indexes nodes (None if it has none)."""
        dims = self.split.schema[field].dims
        return dims.index("nodes") if "nodes" in dims else None

    def concat_dim(self, field: str) -> int | None:
        """Return the axis along which samples of ``field`` are concatenated (nodes or edges), else None."""
        dims = self.split.schema[field].dims
        return next((dims.index(d) for d in ("nodes", "edges") if d in dims), None)

    def collate(self, samples: list[dict[str, Tensor]]) -> Batch:
        """Concatenate samples into one graph: node fields along their node axis, edges with offsets.

        Edge fields are concatenated along their edge axis; other fields are stacked into ``[B, ...]``. Adds ``batch`` [N] (graph id of each node)
        and ``num_graphs``.
        """
        node_field = next((f for f in self.fields if self.node_dim(f) is not None), None)
        if node_field is None:
            raise FormatError(f"{self.split.path}: no loaded field has a 'nodes' dimension")
        sizes = [s[node_field].shape[self.node_dim(node_field)] for s in samples]
        offsets = torch.tensor([0, *np.cumsum(sizes)[:-1]], dtype=torch.long)
        batch: Batch = {
            "edge_index": torch.cat([s["edge_index"] + o for s, o in zip(samples, offsets)], dim=1),
            "batch": torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(sizes)),
            "num_graphs": torch.tensor(len(samples)),
        }
        for f in self.fields:
            axis = self.concat_dim(f)
            parts = [s[f] for s in samples]
            batch[f] = torch.cat(parts, dim=axis) if axis is not None else torch.stack(parts)
        return batch


def trajectory_tensors(split: Split, i: int, fields: Sequence[str]) -> Batch:
    """Load trajectory ``i`` as one unbatched graph: every requested field plus ``edge_index``."""
    out = {f: torch.from_numpy(split.read(i, f)) for f in fields if f not in ("cells", "senders", "receivers")}
    out["edge_index"] = graph_edges(split, i)
    return out
