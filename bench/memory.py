"""Peak training memory and step time against depth: standard, checkpointed, reversible, PyG's GroupAddRev.

One training step is forward + backward + Adam step of the whole ``EncodeProcessDecode`` model (node and
edge encoders, processor, decoder) with an MSE loss against fixed random targets, on a jittered triangulated
grid mesh (``--grid 200 100``: 20,000 nodes, 118,802 directed edges), latent 128. ``groupaddrev`` is the
reference: ``torch_geometric.nn.GroupAddRev`` (two groups) around a node-only MeshGraphNets block (edge MLP +
node MLP at half width; the edge latents stay the encoder's), at the same width and depth.

Each (processor, depth) runs in its own subprocess. Setup builds the graph, the model and the optimiser, and
allocates the persistent training state (parameters, gradients, Adam moments: ``state_mb``) by an Adam step on
zero gradients, which moves no parameter. Adam updates one parameter at a time (``foreach=False``), so that
its temporaries are one parameter's size rather than all of them. Then ``--warmup`` + ``--steps`` training
steps run; ``peak_mb`` is the peak over all of them, as the increase over the post-setup usage:

- CPU: VmHWM over VmRSS, VmHWM being reset through ``/proc/self/clear_refs``: what the process takes from
  the OS with the default glibc allocator (freed memory it keeps for reuse included);
- GPU: ``torch.cuda.max_memory_allocated`` over ``memory_allocated``.

``step_s`` is the median wall-clock time of the ``--steps`` steps after the warm-up, ``cpu_s`` their median
process CPU time (user + system), the fairer comparison on a shared machine. Each child runs under a memory
limit, ``--mem-limit-gb`` above its post-setup footprint (``RLIMIT_AS`` on CPU, a memory fraction on GPU); a
run that fails to allocate is reported as OOM, and so are the deeper runs of that processor (not run). OOM
rows show a linear fit of the processor's measured peaks.

    python bench/memory.py --json bench/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GroupAddRev

from gnnsim.files import write_text_atomic
from gnnsim.graph import EdgeSet, Graph, cells_to_edges
from gnnsim.nn.blocks import Topology, edge_mlp_forward, sum_incoming
from gnnsim.nn.encode_process_decode import EncodeProcessDecode, ModelConfig
from gnnsim.nn.mlp import MLP
from gnnsim.nn.reversible import matched_hidden_size

PROCESSORS = ("standard", "checkpointed", "reversible", "groupaddrev")
DEPTHS = (15, 30, 60, 120)


def grid_graph(nx: int, ny: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Return (senders [E], receivers [E], mesh_pos [N, 2]) of a jittered triangulated [0,2] x [0,1] grid."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(0, 2, nx), np.linspace(0, 1, ny), indexing="ij")
    pos = np.stack([xs.ravel(), ys.ravel()], -1) + rng.uniform(-0.3, 0.3, (nx * ny, 2)) / ny
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = torch.from_numpy(np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]))
    senders, receivers = cells_to_edges(cells)
    return senders, receivers, torch.from_numpy(pos).float()


class NodeOnlyBlock(nn.Module):
    """One GroupAddRev group: messages from (x_s, x_r, static edge latent), summed, then a node update.

    Args:
        width: group width (half the latent size).
        edge_hidden: hidden width of the edge MLP.
        node_hidden: hidden width of the node MLP.
    """

    def __init__(self, width: int, edge_hidden: int, node_hidden: int):
        super().__init__()
        self.edge_mlp = MLP(3 * width, edge_hidden, width)
        self.node_mlp = MLP(2 * width, node_hidden, width)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Map node features [N, W], edges [2, E] and edge latents [E, W] to a node update [N, W]."""
        senders, receivers = edge_index
        messages = edge_mlp_forward(self.edge_mlp, x, edge_attr, senders, receivers, True)  # [E, W]
        return self.node_mlp(torch.cat([x, sum_incoming(messages, receivers, x.shape[0])], -1))  # [N, W]


class GroupAddRevProcessor(nn.Module):
    """PyG's ``GroupAddRev`` (RevGNN, two groups) around ``NodeOnlyBlock``s; edge latents stay unchanged.

    Args:
        latent_size: node latent width (each group gets half, as each coupling of ``ReversibleBlock``).
        depth: number of reversible layers.
    """

    def __init__(self, latent_size: int, depth: int):
        super().__init__()
        half = latent_size // 2
        edge_hidden = matched_hidden_size(3 * latent_size, latent_size, 2)
        node_hidden = matched_hidden_size(2 * latent_size, latent_size, 2)
        self.layers = nn.ModuleList(
            GroupAddRev(nn.ModuleList([NodeOnlyBlock(half, edge_hidden, node_hidden) for _ in range(2)]))
            for _ in range(depth)
        )

    def forward(self, nodes: Tensor, edges: dict[str, Tensor], topology: Topology):
        """Update node latents [N, L] with one edge set's static latents [E, L]; return (nodes, edges)."""
        (name,) = edges
        edge_index = torch.stack(topology[name])  # [2, E]
        for layer in self.layers:
            nodes = layer(nodes, edge_index, edges[name])
        return nodes, edges


def build_model(processor: str, depth: int, latent: int) -> EncodeProcessDecode:
    """Return the EncodeProcessDecode model (11 node, 3 edge features; 3 outputs) for ``processor``."""
    if processor != "groupaddrev":
        cfg = ModelConfig(latent_size=latent, num_blocks=depth, processor=processor)
        return EncodeProcessDecode.build(11, {"mesh": 3}, 3, cfg)
    return EncodeProcessDecode(
        node_encoder=MLP(11, latent, latent),
        edge_encoders=nn.ModuleDict({"mesh": MLP(3, latent, latent)}),
        processor=GroupAddRevProcessor(latent, depth),
        decoder=MLP(latent, latent, 3, layer_norm=False),
        fused=True,  # encoders as the other variants run them
    )


def proc_status(key: str) -> int:
    """Return a /proc/self/status field in bytes (VmRSS, VmHWM, VmSize)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMeter:
    """Peak memory increase over a baseline: VmHWM on CPU, the CUDA caching allocator's peak on GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        """Take the current usage as the baseline and restart the peak from it."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.base = proc_status("VmRSS")

    def peak_mb(self) -> float:
        """Return the peak increase over the baseline since ``reset``, in MiB."""
        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (proc_status("VmHWM") - self.base) / 2**20


def blank_row(processor: str, depth: int, nodes: int, edges: int) -> dict:
    """Return a row with nothing measured yet (``status`` ``oom`` until a run succeeds)."""
    row = {"processor": processor, "depth": depth, "nodes": nodes, "edges": edges, "status": "oom"}
    return row | dict.fromkeys(("peak_mb", "step_s", "cpu_s", "state_mb", "params"))


def child(spec: dict) -> dict:
    """Run one configuration; return its row."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    senders, receivers, pos = grid_graph(*spec["grid"])
    rel = pos[senders] - pos[receivers]  # [E, 2]
    edge_features = torch.cat([rel, rel.norm(dim=-1, keepdim=True)], -1)  # [E, 3]
    edge_set = EdgeSet(edge_features.to(device), senders.to(device), receivers.to(device))
    graph = Graph(torch.randn(len(pos), 11, device=device), {"mesh": edge_set})
    target = torch.randn(len(pos), 3, device=device)  # [N, 3]
    model = build_model(spec["processor"], spec["depth"], spec["latent"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, foreach=False)
    row = blank_row(spec["processor"], spec["depth"], len(pos), len(senders))
    row["params"] = sum(p.numel() for p in model.parameters())
    row["state_mb"] = 4 * 4 * row["params"] / 2**20  # fp32 parameters, gradients, two Adam moments

    # Persistent training state: gradients and Adam moments (an Adam step on zero gradients moves nothing).
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss = (model(graph) - target).square().mean()
        loss.backward()
        opt.step()

    limit = int(spec["mem_limit_gb"] * 2**30)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, limit / torch.cuda.get_device_properties(device).total_memory)
        )
    else:
        resource.setrlimit(resource.RLIMIT_AS, (proc_status("VmSize") + limit, resource.RLIM_INFINITY))
    meter = PeakMeter(device)
    meter.reset()
    try:
        for _ in range(spec["warmup"]):
            step()
        times, cpu_times = [], []
        for _ in range(spec["steps"]):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    except (MemoryError, torch.OutOfMemoryError):
        return row
    except RuntimeError as e:
        if "alloc" not in str(e):
            raise
        return row
    row.update(
        status="ok",
        peak_mb=meter.peak_mb(),
        step_s=float(np.median(times)),
        cpu_s=float(np.median(cpu_times)),
    )
    return row


def estimate(rows: list[dict], processor: str, depth: int) -> float | None:
    """Return the peak (MiB) at ``depth`` by a linear fit of ``processor``'s measured rows (None if < 2)."""
    ok = [(r["depth"], r["peak_mb"]) for r in rows if r["processor"] == processor and r["status"] == "ok"]
    if len(ok) < 2:
        return None
    slope, intercept = np.polyfit(*zip(*ok), 1)
    return float(slope * depth + intercept)


def table_cells(row: dict, standard: dict | None, estimate_mb: float | None) -> list[str]:
    """Return one table line's cells; ratios are to ``standard`` at the same depth."""

    def fmt(value, spec: str) -> str:
        return "-" if value is None else f"{value:{spec}}"

    def ratio(key: str) -> str:
        ok = row[key] is not None and standard is not None and standard[key] is not None
        return f"{row[key] / standard[key]:.2f}" if ok else "-"

    peak = fmt(row["peak_mb"], ".0f")
    if row["status"] == "oom":
        peak = "OOM" + ("" if estimate_mb is None else f" (~{estimate_mb:.0f})")
    return [
        row["processor"], str(row["depth"]), str(row["nodes"]), str(row["edges"]), peak, ratio("peak_mb"),
        fmt(row["state_mb"], ".0f"), fmt(row["step_s"], ".1f"), fmt(row["cpu_s"], ".1f"), ratio("cpu_s"),
    ]  # fmt: skip


def print_table(rows: list[dict]) -> None:
    """Print the rows, with peak and CPU-time ratios to ``standard`` at the same depth."""
    header = [
        "processor",
        "depth",
        "nodes",
        "edges",
        "peak MiB",
        "x std",
        "state MiB",
        "step s",
        "cpu s",
        "x std",
    ]
    widths = [13, 6, 7, 8, 14, 7, 10, 8, 8, 7]
    standard = {r["depth"]: r for r in rows if r["processor"] == "standard" and r["status"] == "ok"}
    lines = [header]
    for r in rows:
        lines.append(table_cells(r, standard.get(r["depth"]), estimate(rows, r["processor"], r["depth"])))
    for cells in lines:
        print(cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:])))


def main() -> None:
    """Run every configuration in its own subprocess, print the table, optionally write JSON rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processors", nargs="+", choices=PROCESSORS, default=list(PROCESSORS))
    parser.add_argument("--depths", nargs="+", type=int, default=list(DEPTHS))
    parser.add_argument(
        "--grid", nargs=2, type=int, default=[200, 100], metavar=("NX", "NY"), help="mesh nodes per side"
    )
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (their peak counts)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--mem-limit-gb", type=float, default=12.0, help="memory allowed above the setup's footprint"
    )
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.warmup < 0 or args.steps < 1:
        parser.error("--warmup must be >= 0 and --steps >= 1")

    senders, _, pos = grid_graph(*args.grid)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rows: list[dict] = []
    for processor in args.processors:
        failed = False
        for depth in sorted(args.depths):
            row = blank_row(processor, depth, len(pos), len(senders))
            if not failed:  # a processor that ran out of memory at a smaller depth is not run deeper
                spec = {"processor": processor, "depth": depth}
                spec.update((k, getattr(args, k)) for k in ("grid", "latent", "warmup", "steps", "threads"))
                spec.update(device=args.device, mem_limit_gb=args.mem_limit_gb)
                t0 = time.perf_counter()
                cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode == 0:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                elif proc.returncode != -9:  # -9: killed by the kernel's OOM killer, reported as OOM
                    raise RuntimeError(f"{processor} depth {depth} failed:\n{proc.stderr[-3000:]}")
                print(
                    f"# {processor} depth {depth}: {row['status']} in {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                )
            failed = row["status"] != "ok"
            rows.append(row)
    print_table(rows)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
