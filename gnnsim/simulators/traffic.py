"""Road traffic on a segment graph: multi-horizon speed forecasts from recent speeds and the historical profile."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from gnnsim.data.dataset import Batch
from gnnsim.graph import EdgeSet, Graph
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.normalization import Normalizer
from gnnsim.simulators.base import Simulator, masked_mse
from gnnsim.traffic.profile import SpeedProfile, absolute_slots

MASKS = {"speed": "mask", "entry_speed": "entry_mask"}  # speed field -> its observation mask
MIN_SPEED = 0.1  # speeds are clamped from below before taking logs (as walk_routes clamps them)


def masked_mean_square(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Return the mean of ``(pred - target) ** 2`` over the entries where ``mask`` is True: ``masked_mse`` with each
    entry a row of one feature (no host sync; a batch with no observed target gives 0, not NaN)."""
    return masked_mse(pred.unsqueeze(-1), target.unsqueeze(-1), mask)


def local_node_ids(graph_id: Tensor) -> Tensor:
    """Return each node's index inside its own graph, from the sorted graph ids [N] of a batch."""
    counts = torch.bincount(graph_id)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(len(graph_id), device=graph_id.device) - starts[graph_id]


class TrafficSimulator(Simulator):
    """Forecasts segment speeds ``horizons`` intervals ahead from the last ``history`` intervals.

    Nodes are road segments; messages flow along successor adjacency (``downstream``: sender -> receiver)
    and against it (``upstream``: queues spill back), each edge set with the data's ``edge_weight`` as its
    feature. The model is MeshGraphNets' encode-process-decode (Pfaff et al., ICLR 2021,
    https://arxiv.org/abs/2010.03409) used as a direct multi-horizon forecaster (no autoregression).

    Node features (normalised online): for each of the last ``history`` intervals the log ratio of the
    observed ``input_field`` to its historical profile (0 where unobserved) and the observation mask; the
    log of the ``target`` profile at each forecast interval; sin/cos of the time of day and a weekend flag at
    the forecast origin; the ``static_fields`` (e.g. length, speed limit, lanes). Outputs: per forecast
    interval, the log ratio of ``target`` to its profile; the forecast is ``profile * exp(output)``. The loss
    is the mean squared normalised error over observed target values only.

    The profile (``gnnsim.traffic.profile.SpeedProfile``: mean by weekday/weekend and interval of the day)
    is fitted on ``profile_split`` the first time it is needed and saved in the state dict; while training,
    each sample reads a profile that leaves out the days of its own day of week.

    Args:
        model_cfg: the learned core's hyperparameters.
        history: observed intervals before the forecast origin.
        horizons: forecast intervals from the origin (interval 0 is the one starting at the origin).
        input_field: the causal speed field the model reads (``speed``).
        target: the field forecast and trained on: ``entry_speed`` (what route ETAs read; SUMO data) or
            ``speed`` (METR-LA / PEMS-BAY).
        static_fields: per-segment static fields used as node features.
        profile_split: the training split the profile is fitted on (not needed to load a checkpoint).
    """

    domain = "traffic"
    baseline_name = "last_value"

    def __init__(
        self,
        model_cfg: ModelConfig,
        history: int = 12,
        horizons: int = 24,
        input_field: str = "speed",
        target: str = "entry_speed",
        static_fields: Sequence[str] = ("length", "speed_limit", "lanes"),
        profile_split: str | None = None,
    ):
        super().__init__(model_cfg)
        if history < 1 or horizons < 2:
            raise ValueError(
                f"simulator.params: history >= 1 and horizons >= 2 expected, got {history}, {horizons}"
            )
        for name, value in (("input_field", input_field), ("target", target)):
            if value not in MASKS:
                raise ValueError(f"simulator.params.{name}: expected one of {sorted(MASKS)}, got {value!r}")
        self.history, self.horizons = history, horizons
        self.input_field, self.target = input_field, target
        self.static_fields = tuple(static_fields)
        self.profile_split = profile_split
        # window, fields, state_fields and metric_field follow from the parameters: instance attributes here
        self.window = history + horizons
        self.state_fields = (target,)
        self.metric_field = target
        self.metric_mask = MASKS[target]  # unobserved intervals (no vehicle) carry no truth
        self.profiled = tuple(dict.fromkeys((input_field, target)))  # profiled fields, without duplicates
        masks = tuple(MASKS[f] for f in self.profiled)
        clock = ("time_of_day", "day_of_week", "edge_weight")
        self.fields = tuple(dict.fromkeys((*self.profiled, *masks, *clock, *self.static_fields)))
        node_size = 2 * history + horizons + 3 + len(self.static_fields)
        self.model = self.build_model(node_size, {"downstream": 1, "upstream": 1}, horizons)
        self.node_normalizer = Normalizer(node_size)
        self.edge_normalizer = Normalizer(1)
        self.output_normalizer = Normalizer(1)
        self.profile = SpeedProfile()

    def params(self) -> dict:
        return {
            "history": self.history,
            "horizons": self.horizons,
            "input_field": self.input_field,
            "target": self.target,
            "static_fields": list(self.static_fields),
            "profile_split": self.profile_split,
        }

    def fit_profile(self) -> None:
        """Fit the historical profile on ``profile_split`` unless it is fitted (or loaded) already."""
        if self.profile.fitted:
            return
        if self.profile_split is None:
            raise ValueError(
                "simulator.params.profile_split: expected the training split to fit the speed profile on"
            )
        self.profile.fit_split(self.profile_split, self.profiled, [MASKS[f] for f in self.profiled])

    def encode(
        self,
        hist: Tensor,
        hist_mask: Tensor,
        slot0: Tensor,
        dow0: Tensor,
        node: Tensor,
        statics: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
    ) -> tuple[Graph, Tensor]:
        """Build the normalised input graph of forecasts made at one origin per node.

        Args:
            hist: `[N, H]` observed ``input_field`` of the last ``history`` intervals (any value where unobserved).
            hist_mask: `[N, H]` bool, True where observed.
            slot0, dow0: `[N]` interval of the day and day of week of the origin (the first forecast interval).
            node: `[N]` segment id of each node in the profile (its index inside its own graph).
            statics: `[N, S]` static features.
            edge_index: `[2, E]` successor pairs (sender upstream of receiver).
            edge_weight: `[E]` edge weights.

        Returns:
            The graph and the log of the target profile `[N, K]` at the forecast intervals.
        """
        self.fit_profile()
        h, k, steps = self.history, self.horizons, self.profile.steps_per_day
        slot, dow = absolute_slots(slot0, dow0, torch.arange(-h, k, device=hist.device), steps)  # [N, H+K]
        prof = self.profile(slot, dow, node[:, None], leave_out=self.training)  # [F, N, H+K]
        log_in = prof[0, :, :h].clamp(min=MIN_SPEED).log()  # [N, H]
        log_target = prof[self.profiled.index(self.target), :, h:].clamp(min=MIN_SPEED).log()  # [N, K]
        rel = torch.where(hist_mask, hist.clamp(min=MIN_SPEED).log() - log_in, 0.0)  # [N, H]
        angle = 2 * math.pi * slot0.float() / steps
        clock = torch.stack([angle.sin(), angle.cos(), (dow0 >= 5).float()], dim=-1)  # [N, 3]
        nodes = torch.cat([rel, hist_mask.float(), log_target, clock, statics.float()], dim=-1)
        weight = self.edge_normalizer(edge_weight.float().reshape(-1, 1))  # [E, 1]
        s, r = edge_index
        graph = Graph(
            self.node_normalizer(nodes),
            {"downstream": EdgeSet(weight, s, r), "upstream": EdgeSet(weight, r, s)},
        )
        return graph, log_target

    def node_statics(self, data: Mapping[str, Tensor], num_nodes: int) -> Tensor:
        """Stack the ``static_fields`` of a batch or trajectory into node features `[num_nodes, S]`."""
        cols = [torch.as_tensor(data[f]).float().reshape(num_nodes, -1) for f in self.static_fields]
        return torch.cat(cols, dim=-1) if cols else torch.zeros(num_nodes, 0)

    def loss(self, batch: Batch) -> Tensor:
        """Return the masked MSE of normalised log-ratio targets over the ``horizons`` intervals of each window."""
        h = self.history
        graph_id = batch["batch"]
        inputs = batch[self.input_field][:h, :, 0].T  # [N, H]
        inputs_mask = batch[MASKS[self.input_field]][:h, :, 0].T.bool()
        target = batch[self.target][h:, :, 0].T  # [N, K]
        target_mask = batch[MASKS[self.target]][h:, :, 0].T.bool()
        self.fit_profile()
        steps = self.profile.steps_per_day
        slot0 = (batch["time_of_day"][:, h].double() * steps).round().long() % steps  # [B]
        dow0 = batch["day_of_week"][:, h].long()
        graph, log_target = self.encode(
            inputs,
            inputs_mask,
            slot0[graph_id],
            dow0[graph_id],
            local_node_ids(graph_id),
            self.node_statics(batch, len(graph_id)).to(inputs.device),
            batch["edge_index"],
            batch["edge_weight"],
        )
        ratio = target.clamp(min=MIN_SPEED).log() - log_target  # [N, K]
        self.output_normalizer(ratio[target_mask].reshape(-1, 1))  # accumulates statistics while training
        ratio = self.output_normalizer(ratio.unsqueeze(-1), accumulate=False).squeeze(-1)
        return masked_mean_square(self.model(graph), ratio, target_mask)

    @torch.no_grad()
    def forecast(
        self,
        speed: Tensor,
        mask: Tensor,
        origins: Tensor,
        slot0: Tensor,
        dow0: Tensor,
        statics: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        chunk: int = 32,
    ) -> Tensor:
        """Forecast the target speed of intervals ``origins[s] .. origins[s] + horizons - 1`` of one series.

        Only intervals before each origin are read (earlier than the series' start counts as unobserved).

        Args:
            speed, mask: `[T, N]` the observed ``input_field`` and its mask.
            origins: `[S]` forecast origins (interval indices, 0..T).
            slot0, dow0: `[S]` interval of the day and day of week of each origin.
            statics: `[N, S_f]` static features; edge_index `[2, E]`; edge_weight `[E]`.
            chunk: origins batched into one graph.

        Returns:
            `[S, horizons, N]` forecast speeds.
        """
        t, n = speed.shape
        offsets = torch.arange(-self.history, 0, device=speed.device)
        out = []
        for a in range(0, len(origins), chunk):
            o = origins[a : a + chunk].long()
            s = len(o)
            idx = o[:, None] + offsets  # [s, H]
            seen = (idx >= 0) & (idx < t)
            hist = speed[idx.clamp(0, t - 1)].permute(0, 2, 1).reshape(s * n, -1)  # [s * N, H]
            hist_mask = (mask[idx.clamp(0, t - 1)] & seen[..., None]).permute(0, 2, 1).reshape(s * n, -1)
            shift = (torch.arange(s, device=speed.device) * n).repeat_interleave(edge_index.shape[1])
            edges = edge_index.repeat(1, s) + shift
            graph, log_target = self.encode(
                hist,
                hist_mask.bool(),
                slot0[a : a + chunk].repeat_interleave(n),
                dow0[a : a + chunk].repeat_interleave(n),
                torch.arange(n, device=speed.device).repeat(s),
                statics.repeat(s, 1),
                edges,
                edge_weight.repeat(s),
            )
            ratio = self.output_normalizer.inverse(self.model(graph).unsqueeze(-1)).squeeze(-1)  # [s * N, K]
            out.append((log_target + ratio).exp().reshape(s, n, -1).permute(0, 2, 1))
        return torch.cat(out) if out else speed.new_zeros(0, self.horizons, n)

    def trajectory_origins(self, traj: Batch, num_steps: int | None) -> Tensor:
        """Return the frames ``window - 2 .. window - 2 + num_steps`` that rollouts forecast (gnnsim-rollout's layout)."""
        t = traj[self.input_field].shape[0]
        first = self.window - 2
        steps = t - 1 - first if num_steps is None else num_steps
        if first + steps > t - 1:
            raise ValueError(
                f"num_steps={steps}: the trajectory has {t} frames, at most {t - 1 - first} steps fit"
            )
        return torch.arange(first, first + steps + 1, device=traj[self.input_field].device)

    @torch.no_grad()
    def rollout(self, traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Forecast each frame from the ``history`` frames before it (one interval ahead); `[steps + 1, N, 1]`."""
        self.fit_profile()
        frames = self.trajectory_origins(traj, num_steps)
        steps = self.profile.steps_per_day
        slot0 = (traj["time_of_day"][frames].double() * steps).round().long() % steps
        pred = self.forecast(
            traj[self.input_field][..., 0],
            traj[MASKS[self.input_field]][..., 0].bool(),
            frames,
            slot0,
            traj["day_of_week"][frames].long(),
            self.node_statics(traj, traj[self.input_field].shape[1]).to(frames.device),
            traj["edge_index"],
            traj["edge_weight"],
        )
        return {self.target: pred[:, 0, :, None]}

    def baseline(self, traj: Batch, num_steps: int | None = None) -> dict[str, Tensor]:
        """Last value: each frame's forecast is the last ``input_field`` observed before it (0 if none)."""
        frames = self.trajectory_origins(traj, num_steps)
        speed, mask = traj[self.input_field][..., 0], traj[MASKS[self.input_field]][..., 0].bool()  # [T, N]
        t = torch.arange(speed.shape[0])[:, None].expand_as(speed)
        last = torch.where(mask, t, -1).cummax(0).values  # [T, N] last observed frame at or before each frame
        prev = last[(frames - 1).clamp(min=0)]  # [S, N]
        value = speed.gather(0, prev.clamp(min=0))
        return {self.target: torch.where((prev >= 0) & (frames[:, None] > 0), value, 0.0)[..., None]}
