"""Training and inference step time of the plain and the optimised processor on a cylinder-flow-sized graph.

The graph is a jittered triangulated channel [0, 1.6] x [0, 0.41] of 76 x 25 nodes (1,900 nodes, 10,998 directed
edges, as DeepMind's cylinder_flow meshes), node types as in cylinder_flow, random velocities and pressures. The
model is MeshGraphNets' (latent 128, 15 blocks, 2 hidden layers) inside ``FlowSimulator`` (noise 0.02), both
variants with the same weights:

- plain: ``fused=False``, the textbook block: ``cat([x_s, x_r, e])`` + Linear, ``cat([v, sum e'])`` + Linear,
  ``index_add_`` for the sum over incoming edges;
- optimised: ``fused=True``: no concatenation, node latents projected once per node and gathered per edge; on
  a CPU with AVX-512 each processor MLP runs, forward and backward, as one pass of the fused kernel
  (``gnnsim.nn.cpu_kernel``; an inference step runs all 30 in one call), elsewhere (or with ``--no-kernel``)
  tile by tile in PyTorch ops (``gnnsim.nn.blocks.TiledMLP``);
- compiled (``--compile``): the optimised model under ``torch.compile`` (minutes to compile on 2 cores).

A training step is ``sim.loss`` (normalisers, noise, features, model, masked MSE) + backward + Adam step; an
inference step is one ``sim.step`` (what a rollout does per frame) under ``torch.no_grad``. Variants are timed
alternately, ``--reps`` times each after warm-up steps; ``step_s`` is the median wall-clock time, ``cpu_s`` the
median process CPU time (all threads), the fairer figure on a shared machine, and page faults the median minor
faults per step (memory the allocator took fresh from the kernel). Like gnnsim's commands, the bench has glibc
keep freed memory (``gnnsim.cli.common.keep_freed_memory``; set any ``MALLOC_*`` variable, e.g.
``MALLOC_PERTURB_=0``, to time glibc's defaults).

FLOPs are those of the matmuls the step actually runs (every Linear, forward and backward), recorded with a
``TorchDispatchMode``, 2 per multiply-add (under a dispatch mode the optimised step runs in PyTorch ops, which
compute the same products as the kernel). "matmuls alone" replays the recorded matmuls (same shapes, operand
layouts and order) with nothing between them: the time a step would take if everything else were free, so
"matmuls alone x plain" is the floor under the variant's "x plain" ratio at this machine's matmul speed. The
peak is the best GFLOP/s of a 2048 x 2048 float32 matmul (bfloat16 with ``--amp``; 8192 x 8192 on a GPU),
measured before and after the steps in the same run. Torch uses as many threads as the process has cores
(``--threads``). ``--device cuda --amp`` times the GPU path (whole-tensor ops, bf16 autocast), waiting for the
device after every step.

    python bench/throughput.py --json bench/throughput.json
    python bench/throughput.py --device cuda --amp --json bench/throughput_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gnnsim.cli.common import keep_freed_memory
from gnnsim.files import write_text_atomic
from gnnsim.graph import NodeType, cells_to_edges
from gnnsim.nn import cpu_kernel
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.flow import FlowSimulator

MODES = ("train", "infer")
aten = torch.ops.aten


def channel_batch(nx: int = 76, ny: int = 25, seed: int = 0) -> dict[str, torch.Tensor]:
    """Return a one-graph flow batch on a jittered triangulated channel mesh of ``nx * ny`` nodes."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(0, 1.6, nx), np.linspace(0, 0.41, ny), indexing="ij")
    xs, ys = xs.ravel(), ys.ravel()
    interior = (xs > 0) & (xs < 1.6) & (ys > 0) & (ys < 0.41)
    pos = np.stack([xs, ys], -1)
    pos[interior] += rng.uniform(-0.3, 0.3, (interior.sum(), 2)) * np.array([1.6 / nx, 0.41 / ny])
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)])
    node_type = np.full(nx * ny, int(NodeType.NORMAL))
    node_type[xs == 0] = NodeType.INFLOW
    node_type[xs == 1.6] = NodeType.OUTFLOW
    node_type[(ys == 0) | (ys == 0.41)] = NodeType.WALL_BOUNDARY
    g = torch.Generator().manual_seed(seed)
    return {
        "mesh_pos": torch.from_numpy(pos).float(),
        "node_type": torch.from_numpy(node_type).int(),
        "velocity": torch.randn(2, nx * ny, 2, generator=g),
        "pressure": torch.randn(2, nx * ny, 1, generator=g),
        "edge_index": cells_to_edges(torch.from_numpy(cells)),
    }


class MatmulRecorder(TorchDispatchMode):
    """Record the operands (shape, strides) of every matrix multiply run under it, forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in (aten.mm, aten.addmm, aten.addmm_):
            a, b = args[:2] if packet is aten.mm else args[1:3]
            self.calls.append((tuple(a.shape), a.stride(), tuple(b.shape), b.stride(), a.dtype))
        return func(*args, **(kwargs or {}))


def record_matmuls(step) -> list:
    """Run ``step`` once; return the (shape, strides) of both operands and the dtype of each matmul it ran."""
    with MatmulRecorder() as recorder:  # under a dispatch mode the optimised step runs in PyTorch ops: the same
        step()  # products as the fused CPU kernel's
    return recorder.calls


def matmul_flops(calls: list) -> int:
    """Return the FLOPs of the recorded matmuls (2 per multiply-add)."""
    return sum(2 * a[0] * a[1] * b[1] for a, _, b, _, _ in calls)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose ops return when done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_seconds(calls: list, device: torch.device, reps: int = 5) -> float:
    """Return the median time of running the recorded matmuls alone, same shapes, operand layouts, dtypes and order."""

    def operand(shape, stride, dtype):
        size = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
        return torch.randn(size, device=device).to(dtype).as_strided(shape, stride)

    buffers = {}
    for call in calls:
        if call not in buffers:
            a, b = operand(*call[:2], call[4]), operand(*call[2:4], call[4])
            buffers[call] = (a, b, a.new_empty(a.shape[0], b.shape[1]))
    times = []
    for _ in range(reps + 1):  # the first pass warms up
        synchronize(device)
        t0 = time.perf_counter()
        for a, b, out in map(buffers.get, calls):
            torch.mm(a, b, out=out)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Return the best GFLOP/s of a ``size`` x ``size`` matmul in ``dtype`` (x 4 in size on a GPU)."""
    size = size * 4 if device.type == "cuda" else size
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def make_step(sim: FlowSimulator, batch: dict[str, torch.Tensor], mode: str, amp: bool = False):
    """Return a function that runs one training or inference step of ``sim`` on ``batch`` (on its device) and
    waits for it; ``amp`` runs it under bfloat16 autocast."""
    device = batch["velocity"].device
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=amp)
    if mode == "train":
        sim.train()
        opt = torch.optim.Adam(sim.parameters(), lr=1e-5, fused=True)  # as gnnsim-train

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = sim.loss(batch)
            loss.backward()
            opt.step()
            synchronize(device)

        return step
    sim.eval()
    velocity = batch["velocity"][0]

    def step() -> None:
        with torch.no_grad(), autocast:
            sim.step(batch["mesh_pos"], batch["node_type"], batch["edge_index"], velocity)
        synchronize(device)

    return step


def time_steps(steps: dict[str, callable], reps: int, warmup: int) -> dict[str, tuple[list, list, list]]:
    """Run each step ``warmup`` times, then ``reps`` times alternately; return per variant the wall and CPU
    seconds and the minor page faults (fresh memory the allocator took from the kernel) of each timed step."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: ([], [], []) for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            w0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            step()
            times[name][0].append(time.perf_counter() - w0)
            times[name][1].append(time.process_time() - c0)
            times[name][2].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="timed steps per variant and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant and mode first")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--compile", action="store_true", help="also time the optimised model under torch.compile")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:i] (then --threads only sets host threads)")
    parser.add_argument("--amp", action="store_true", help="run the steps under bfloat16 autocast")
    parser.add_argument("--no-kernel", action="store_true", help="run the optimised step in PyTorch ops only")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.no_kernel:
        os.environ["GNNSIM_CPU_KERNEL"] = "0"
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = {k: v.to(device) for k, v in channel_batch().items()}
    num_nodes, num_edges = batch["node_type"].shape[0], batch["edge_index"].shape[1]
    load_before = os.getloadavg()[0]
    peak_dtype = torch.bfloat16 if args.amp else torch.float32
    peak = peak_gflops(device, peak_dtype)

    torch.manual_seed(0)
    sims = {"plain": FlowSimulator(ModelConfig(fused=False)), "optimised": FlowSimulator(ModelConfig(fused=True))}
    sims["optimised"].load_state_dict(sims["plain"].state_dict())
    if args.compile:
        sims["compiled"] = FlowSimulator(ModelConfig(fused=True))
        sims["compiled"].load_state_dict(sims["plain"].state_dict())
        sims["compiled"].model.compile(dynamic=True)
    sims = {name: sim.to(device) for name, sim in sims.items()}

    rows = []
    for mode in MODES:
        steps = {name: make_step(sim, batch, mode, args.amp) for name, sim in sims.items()}
        calls = {name: record_matmuls(steps[name]) for name in ("plain", "optimised")}  # also a warm-up step
        calls["compiled"] = calls["optimised"]  # the same function: its matmuls, before inductor fuses around them
        matmul_s = {name: matmul_seconds(calls[name], device) for name in ("plain", "optimised")}
        matmul_s["compiled"] = matmul_s["optimised"]
        for name, (wall, cpu, faults) in time_steps(steps, args.reps, args.warmup).items():
            flops = matmul_flops(calls[name])
            step_s, cpu_s = statistics.median(wall), statistics.median(cpu)
            rows.append({
                "variant": name, "mode": mode, "step_s": step_s, "nodes_per_s": num_nodes / step_s,
                "gflops": flops / step_s / 1e9, "cpu_s": cpu_s, "min_s": min(wall), "gflop": flops / 1e9,
                "faults": statistics.median(faults), "matmul_s": matmul_s[name],
            })
    peak = max(peak, peak_gflops(device, peak_dtype))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    if device.type == "cpu" and not args.amp:
        where += ", fused CPU kernel" if cpu_kernel.library() is not None else ", PyTorch ops (no fused CPU kernel)"
    print(f"graph: {num_nodes} nodes, {num_edges} directed edges; latent 128, 15 blocks; "
          f"torch {torch.__version__}, {where}{', bf16 autocast' if args.amp else ''}; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"peak ({str(peak_dtype).removeprefix('torch.')} matmul): {peak:.0f} GFLOP/s; "
          f"{args.reps} interleaved reps, medians\n")
    print("| variant | mode | step ms | min ms | CPU ms | page faults | nodes/s | MLP GFLOP | GFLOP/s | % peak "
          "| matmuls alone ms | x plain (wall) | x plain (CPU) | matmuls alone x plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    plain = {r["mode"]: r for r in rows if r["variant"] == "plain"}
    for r in rows:
        base = plain[r["mode"]]
        print(f"| {r['variant']} | {r['mode']} | {r['step_s'] * 1e3:.0f} | {r['min_s'] * 1e3:.0f} "
              f"| {r['cpu_s'] * 1e3:.0f} | {r['faults']:,.0f} "
              f"| {r['nodes_per_s']:,.0f} | {r['gflop']:.2f} | {r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f} "
              f"| {r['matmul_s'] * 1e3:.0f} | {r['step_s'] / base['step_s']:.2f} | {r['cpu_s'] / base['cpu_s']:.2f} "
              f"| {r['matmul_s'] / base['step_s']:.2f} |")
    if args.json:
        keys = ("variant", "mode", "step_s", "nodes_per_s", "gflops", "cpu_s", "matmul_s")
        write_text_atomic(args.json, json.dumps([{k: r[k] for k in keys} for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
