"""The fused CPU MLP kernel (``fused_mlp.c``): built on first use with the system's C compiler, called by ctypes.

A forward pass runs a whole MeshGraphNets MLP over all rows, blocks of 12 rows at a time with every activation
in L1: the split first Linear with its gathered node projections (computed in the same pass), ReLUs, later
Linears, LayerNorm, residual and the sum into receivers. One call runs one pass (``TiledMLP``) or a sequence of
them (``run_blocks``: a processor's blocks without autograd, no return to Python in between); a backward call
runs one pass's backward. On the bench graph, on one core, an edge MLP's forward does its products' FLOPs
(counted as ordinary products: Strassen's skip 1/8 of them) at 90 % of the core's float32 FMA peak, against
~60 % for the tiled PyTorch path in ``gnnsim.nn.blocks`` (``docs/benchmarks.md``).

It is used for float32 on CPUs with AVX-512 (``torch.backends.cpu.get_cpu_capability()``), when the output
width is a multiple of 32 (hidden widths are padded to one with zero units), outside ``TorchDispatchMode``s (a
FLOP counter sees the PyTorch path's matmuls, the same products), and while the threads' private sums (into
receivers forward, into the gathered projections backward) fit in ``THREAD_BUFFERS`` bytes. The library is
compiled with ``-march=native`` into ``$GNNSIM_CACHE`` (default ``~/.cache/gnnsim``) under a name keyed by the
source, the flags and the CPU, so a home folder shared by different machines keeps one build per CPU. Where
the build fails (no ``$CC``, default ``cc``) gnnsim warns once and runs the PyTorch path, the same function to
float32 rounding; ``GNNSIM_CPU_KERNEL=0`` chooses that path without a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

SOURCE = Path(__file__).with_name("fused_mlp.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
THREAD_BUFFERS = 1 << 28  # bytes: per-thread sums into receivers (forward), into projections (backward)
_P, _I64, _I32, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float


class Forward(ctypes.Structure):
    """One MLP's forward pass as ``gnnsim_mlp_forward`` reads it (``Forward`` in fused_mlp.c; ``forward_pass``
    makes one, ``keep`` holds what its pointers point into)."""

    _fields_ = [
        ("rows", _I64), ("widths", _P), ("num_inputs", _I32), ("inputs", _P), ("in_widths", _P),
        ("first_weights", _P), ("first_ld", _P), ("first_bias", _P), ("gather_count", _I32), ("nodes", _P),
        ("num_gather", _I64), ("node_width", _I64), ("gather_weights", _P), ("gather_ld", _P), ("gather_index", _P),
        ("num_layers", _I32), ("weights", _P), ("biases", _P), ("norm_weight", _P), ("norm_bias", _P),
        ("eps", _F32), ("residual", _P), ("out", _P), ("receivers", _P), ("incoming", _P), ("num_nodes", _I64),
        ("acts", _P), ("pre_norm", _P), ("mean", _P), ("rstd", _P),
    ]

_BACKWARD = [  # gnnsim_mlp_backward's
    _I64, _P, _I32, _P, _P, _P, _P, _I32, _P, _P, _I64, _I32, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I32, _P,
    _P, _P, _P, _P, _P, _I32,
]


def _cpu_key() -> str:
    """Return what ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(wanted))


@functools.cache
def library() -> ctypes.CDLL | None:
    """Return the compiled kernel, building it if needed; None (after one warning) where it cannot run."""
    if os.environ.get("GNNSIM_CPU_KERNEL", "1") == "0":
        return None
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return None
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256("\n".join([SOURCE.read_text(), cc, *FLAGS, _cpu_key()]).encode()).hexdigest()[:16]
    path = Path(os.environ.get("GNNSIM_CACHE", Path.home() / ".cache" / "gnnsim")) / f"fused_mlp-{key}.so"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes may build at once: each its own
    cmd = [*shlex.split(cc), *FLAGS, str(SOURCE), "-o", str(tmp)]
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            os.replace(tmp, path)
        lib = ctypes.CDLL(str(path))  # its libgomp.so.1 resolves to the one torch has loaded: one thread pool
    except (OSError, subprocess.CalledProcessError) as err:
        detail = (getattr(err, "stderr", "") or str(err)).strip().replace("\n", " ")[:300]
        warnings.warn(
            f"gnnsim: no fused CPU kernel ({shlex.join(cmd)}: {detail}); running the slower PyTorch path "
            "(GNNSIM_CPU_KERNEL=0 silences this)",
            stacklevel=2,
        )
        return None
    finally:
        tmp.unlink(missing_ok=True)
    lib.gnnsim_mlp_forward.argtypes = [_I32, ctypes.POINTER(Forward), _I32]
    lib.gnnsim_mlp_backward.argtypes = _BACKWARD
    lib.gnnsim_mlp_forward.restype = lib.gnnsim_mlp_backward.restype = ctypes.c_int
    return lib


_disabled = False


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch path inside the block (tests compare the two; the bench counts the matmuls there)."""
    global _disabled
    before, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = before


def supports(tensors: Sequence[Tensor], widths: Sequence[int], per_thread_rows: int = 0) -> bool:
    """Whether the kernel can run an MLP on these tensors with these Linear output widths (multiples of 32:
    ``padded_widths``), each thread summing into ``per_thread_rows`` rows of its own (at most
    ``THREAD_BUFFERS`` bytes for all threads together)."""
    return (
        not _disabled
        and not is_in_torch_dispatch_mode()  # a mode (FLOP counter, profiler's recorder) wants to see the ops
        and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and all(w % 32 == 0 for w in widths)
        and torch.get_num_threads() * per_thread_rows * max(widths) * 4 <= THREAD_BUFFERS
        and library() is not None
    )


def linear_widths(first_weights: Sequence[Tensor], layers: Sequence[tuple[Tensor, Tensor]]) -> list[int]:
    """Return the output width of each Linear: the first (split by input), then the later ones."""
    return [first_weights[0].shape[0], *(bias.shape[0] for _, bias in layers)]


def padded_widths(widths: Sequence[int]) -> list[int]:
    """The Linear widths the kernel runs an MLP at: hidden ones rounded up to multiples of 32 (zero units added,
    the same function), the output's as it is."""
    return [-(-w // 32) * 32 for w in widths[:-1]] + [widths[-1]]


def _pointers(tensors: Sequence[Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _int64s(values) -> ctypes.Array:
    values = list(values)
    return (ctypes.c_int64 * len(values))(*values)


def _check(status: int, what: str) -> None:
    """Raise for a kernel call's nonzero status: 1, arguments out of its range; 2, out of memory; 3, an index
    out of range."""
    if status == 3:
        raise IndexError(f"fused CPU kernel ({what}): an index is out of range (gathered rows or receivers)")
    if status == 2:
        raise MemoryError(f"fused CPU kernel ({what}): out of memory for its scratch buffers")
    if status:
        raise ValueError(f"fused CPU kernel ({what}): widths must be multiples of 32, with 1-8 inputs")


def _rows(w: Tensor) -> Tensor:
    """``w`` (a weight or a block of its columns) with unit column stride, as the kernel reads it."""
    return w if w.stride(1) == 1 else w.contiguous()


def forward_pass(
    inputs: Sequence[Tensor],
    first_weights: Sequence[Tensor],
    first_bias: Tensor | None,
    layers: Sequence[tuple[Tensor, Tensor]],
    norm: tuple[Tensor, Tensor, float] | None,
    gather: tuple[Tensor, Sequence[Tensor], Sequence[Tensor]] | None = None,
    residual: bool = False,
    receivers: Tensor | None = None,
    num_nodes: int = 0,
    saved: tuple[list[Tensor], Tensor | None, Tensor | None, Tensor | None] | None = None,
    into: Tensor | None = None,
    incoming: Tensor | None = None,
) -> tuple[Forward, Tensor, Tensor | None]:
    """Describe the MLP ``fused_mlp`` describes as one kernel pass; return ``(pass, out, incoming or None)``,
    the outputs to be written when ``run_forward`` runs the pass.

    ``first_weights`` are the first Linear's [H, K_i] column blocks, ``layers`` the later (weight, bias)s,
    ``norm`` (weight, bias, eps) or None, ``gather`` the ``(nodes, weights, index)`` whose projections
    ``nodes @ weights[j].T`` the first Linear adds at rows ``index[j]``. With ``saved = (acts, pre_norm, mean,
    rstd)`` (preallocated, as ``TiledMLP`` keeps them), the post-ReLU activations and the LayerNorm's input and
    statistics are written too. ``into`` and ``incoming``, where given, are the (contiguous) tensors ``out`` and
    the sum go into (``into`` may be the first input: each block of rows is read before it is written); fresh
    ones otherwise. The kernel checks each index before it reads or writes there (IndexError).
    """
    rows, widths = inputs[0].shape[0], linear_widths(first_weights, layers)
    width = widths[-1]
    xs = [x.contiguous() for x in inputs]
    ws = [_rows(w) for w in first_weights]
    layer_ws, layer_bs = [w.contiguous() for w, _ in layers], [b.contiguous() for _, b in layers]
    nodes, gather_ws, index = _gather_args(gather)
    if receivers is not None:
        receivers = receivers.contiguous()
        incoming = xs[0].new_empty(num_nodes, width) if incoming is None else incoming
    out = xs[0].new_empty(rows, width) if into is None else into
    acts, pre_norm, mean, rstd = saved if saved is not None else ([], None, None, None)
    arrays = [
        _int64s(widths), _pointers(xs), _int64s(x.shape[1] for x in xs), _pointers(ws),
        _int64s(w.stride(0) for w in ws),
        _pointers(gather_ws), _int64s(w.stride(0) for w in gather_ws), _pointers(index), _pointers(layer_ws),
        _pointers(layer_bs), _pointers(acts) if saved is not None else None,
    ]
    widths_a, xs_a, in_widths_a, ws_a, ld_a, gws_a, gld_a, index_a, lws_a, lbs_a, acts_a = (
        None if a is None else ctypes.addressof(a) for a in arrays
    )
    norm_args = (None, None, 0.0) if norm is None else (norm[0].data_ptr(), norm[1].data_ptr(), norm[2])
    args = Forward(
        rows, widths_a, len(xs), xs_a, in_widths_a, ws_a, ld_a, _ptr(first_bias), len(index), _ptr(nodes),
        0 if nodes is None else nodes.shape[0], 0 if nodes is None else nodes.shape[1], gws_a, gld_a, index_a,
        len(layers), lws_a, lbs_a, *norm_args, _ptr(xs[0]) if residual else None, out.data_ptr(), _ptr(receivers),
        _ptr(incoming), num_nodes, acts_a, _ptr(pre_norm), _ptr(mean), _ptr(rstd),
    )
    args.keep = (arrays, xs, ws, first_bias, layer_ws, layer_bs, norm, nodes, gather_ws, index, receivers)
    return args, out, incoming


def run_forward(passes: Sequence[Forward]) -> None:
    """Run kernel passes in turn, in one call (one team of threads; a pass may read what earlier ones wrote)."""
    status = library().gnnsim_mlp_forward(len(passes), (Forward * len(passes))(*passes), torch.get_num_threads())
    _check(status, "forward")


def _gather_args(gather):
    """Return ``gather``'s nodes, weights and index as the kernel reads them (None, [], [] without one)."""
    if gather is None:
        return None, [], []
    nodes, weights, index = gather
    return nodes.contiguous(), [_rows(w) for w in weights], [i.contiguous() for i in index]


def mlp_backward(
    inputs: Sequence[Tensor],
    first_weights: Sequence[Tensor],
    first_bias: Tensor | None,
    layers: Sequence[tuple[Tensor, Tensor]],
    norm: tuple[Tensor, Tensor] | None,
    saved: tuple[Sequence[Tensor], Tensor | None, Tensor | None, Tensor | None],
    grad_out: Tensor,
    needs_inputs: Sequence[bool],
    gather: tuple[Tensor, Sequence[Tensor], Sequence[Tensor]] | None = None,
    residual: bool = False,
    receivers: Tensor | None = None,
    grad_incoming: Tensor | None = None,
) -> tuple[list, list[Tensor], Tensor | None, list[tuple[Tensor, Tensor]], tuple | None, Tensor | None]:
    """The backward pass of a ``forward_pass`` from what it saved; return the gradients of the inputs (None where
    ``needs_inputs`` is False), of the first Linear's column blocks and bias, of the later (weight, bias)s, of the
    LayerNorm's (weight, bias) and of the gathered projections ([M, J, H], with ``gather``)."""
    lib = library()
    acts, pre_norm, mean, rstd = saved
    rows, widths = grad_out.shape[0], linear_widths(first_weights, layers)
    threads = torch.get_num_threads()
    xs = [x.contiguous() for x in inputs]
    ws = [_rows(w) for w in first_weights]  # [H, K_i]
    new = grad_out.new_zeros  # per-thread sums, reduced below
    g_xs = [x.new_empty(x.shape) if need else None for x, need in zip(xs, needs_inputs)]
    g_w1 = new(threads, sum(w.numel() for w in ws))
    g_b1 = None if first_bias is None else new(threads, widths[0])
    g_ws = new(threads, sum(w.numel() for w, _ in layers))  # each layer's, flat
    g_bs = new(threads, sum(b.numel() for _, b in layers))
    g_norm = None if norm is None else new(threads, 2, widths[-1])
    nodes, _, index = _gather_args(gather)
    g_table = None if nodes is None else new(threads, nodes.shape[0], len(index), widths[0])
    layer_ws, grad_out = [w.contiguous() for w, _ in layers], grad_out.contiguous()  # referenced: pointers below
    if grad_incoming is not None:
        grad_incoming = grad_incoming.contiguous()
    norm_ptrs = (None,) * 4 if norm is None else (norm[0].data_ptr(), *(t.data_ptr() for t in (pre_norm, mean, rstd)))
    status = lib.gnnsim_mlp_backward(
        rows, _int64s(widths), len(xs), _pointers(xs), _int64s(x.shape[1] for x in xs), _pointers(ws),
        _int64s(w.stride(0) for w in ws), len(index), _pointers(index), _ptr(g_table),
        0 if nodes is None else nodes.shape[0], len(layers), _pointers(layer_ws), *norm_ptrs, _pointers(acts),
        grad_out.data_ptr(), _ptr(receivers), _ptr(grad_incoming), int(residual),
        (ctypes.c_void_p * len(xs))(*(None if g is None else g.data_ptr() for g in g_xs)),
        g_w1.data_ptr(), _ptr(g_b1), g_ws.data_ptr(), g_bs.data_ptr(), _ptr(g_norm), threads,
    )
    _check(status, "backward")
    g_w1 = g_w1.sum(0).split([w.numel() for w in ws])
    g_ws = g_ws.sum(0).split([w.numel() for w, _ in layers])
    g_bs = g_bs.sum(0).split([b.numel() for _, b in layers])
    return (
        g_xs,
        [g.view(w.shape) for g, w in zip(g_w1, ws)],
        None if g_b1 is None else g_b1.sum(0),
        [(g_w.view(w.shape), g_b) for g_w, g_b, (w, _) in zip(g_ws, g_bs, layers)],
        None if g_norm is None else tuple(g_norm.sum(0)),
        None if g_table is None else g_table.sum(0),
    )
