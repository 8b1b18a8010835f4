"""The MeshGraphNets GraphNetBlock: edge update, sum aggregation, node update, residuals.

Two implementations of one function, chosen by ``fused``:

- plain: concatenate ``[x_s; x_r; e]`` and ``[v; sum e']`` and apply the MLPs (the textbook form; the
  reference).
- fused: build no concatenation. The first Linear is split by input, ``W [x_s; x_r; e] = W_s x_s + W_r x_r +
  W_e e``, so node latents are projected once per node and the projections gathered per edge (``Gather``). On
  CPU the MLPs then run tile by tile over rows, forward and backward (``TiledMLP``), with the residual and the
  sum over incoming edges taken on each tile: ReLUs in place, no concatenation or gather copies, inference
  tiles in reused buffers, gradients of the gathers summed by ``index_add_`` (not ``index_put_``), only the
  tensors the backward pass reads written out. Where the fused CPU kernel runs (float32, AVX-512, output
  widths that are multiples of 32: ``gnnsim.nn.cpu_kernel``), each MLP is one kernel call forward and one
  backward instead, saving the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnsim.nn import cpu_kernel
from gnnsim.nn.mlp import MLP

Topology = dict[str, tuple[Tensor, Tensor]]  # edge set name -> (senders [E], receivers [E])

TILE_ELEMENTS = 1 << 18  # rows x width of one tile: 1 MiB of float32 (fastest on the bench graph, 2 MiB L2)


def sum_incoming(messages: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Sum edge messages [E, F] into their receivers; return [num_nodes, F]."""
    out = messages.new_zeros(num_nodes, messages.shape[1])
    return out.index_add_(0, receivers, messages)


def edge_mlp_forward(
    mlp: MLP, nodes: Tensor, edges: Tensor, senders: Tensor, receivers: Tensor, fused: bool
) -> Tensor:
    """Apply an edge MLP to ``[x_sender; x_receiver; e]`` for every edge; return [E, F_out].

    With ``fused``, the first layer is split as ``W [x_s; x_r; e] = W_s x_s + W_r x_r + W_e e``: node latents
    are projected once per node before the gather, and no [E, 3F] concatenation is built. Both paths use the
    same parameters and compute the same function.
    """
    if not fused:
        return mlp(torch.cat([nodes[senders], nodes[receivers], edges], dim=-1))
    gather, w_edge = split_edge_mlp(mlp, nodes, senders, receivers)
    return fused_mlp(mlp, [edges], [w_edge], gather)[0]


class Gather(NamedTuple):
    """Node rows an MLP's first Linear adds to each of its rows: ``sum_j (nodes @ weights[j].T)[index[j]]``.

    The projections are computed once per node and gathered per row (an edge MLP's ``W_s x_s + W_r x_r``).
    """

    nodes: Tensor  # [M, F]
    weights: tuple[Tensor, ...]  # [H, F] each
    index: tuple[Tensor, ...]  # [R] each: the node each row takes


def split_edge_mlp(mlp: MLP, nodes: Tensor, senders: Tensor, receivers: Tensor) -> tuple[Gather, Tensor]:
    """Split an edge MLP's first layer ``[W_s | W_r | W_e]``: return the node projections to gather (senders
    through ``W_s``, receivers through ``W_r``) and ``W_e`` [H, F_edge], the columns applied to edge latents."""
    f, w = nodes.shape[1], mlp.first.weight
    return Gather(nodes, (w[:, :f], w[:, f : 2 * f]), (senders, receivers)), w[:, 2 * f :]


def input_columns(mlp: MLP, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """The first Linear's weight split into column blocks [H, F_k], one per input (``fused_mlp``'s ``weights``
    for inputs that the plain MLP would concatenate)."""
    return mlp.first.weight.split([x.shape[1] for x in inputs], dim=1)


def fused_mlp(
    mlp: MLP,
    inputs: Sequence[Tensor],
    weights: Sequence[Tensor],
    gather: Gather | None = None,
    residual: bool = False,
    receivers: Tensor | None = None,
    num_nodes: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """Apply ``mlp`` with its first Linear split by input, concatenating nothing; optionally add and sum it.

    The first pre-activation is ``b + sum_k inputs[k] @ weights[k].T + sum_j (g.nodes @ g.weights[j].T)[g.index[j]]``
    for ``g = gather``; the later layers are ``mlp``'s own. Runs tile by tile on CPU (``TiledMLP``); elsewhere as
    whole-tensor autograd ops (GPU kernels are fast and launches are not), and so under ``torch.compile``, which
    fuses them.

    Args:
        mlp: the MLP whose first bias and later layers are applied.
        inputs: dense inputs [R, F_k].
        weights: the first Linear's columns for each input, [H, F_k].
        gather: optional node projections added per row (``split_edge_mlp``: an edge's sender and receiver).
        residual: return ``inputs[0] + MLP(...)`` (the latent update) instead of ``MLP(...)``.
        receivers: [R] target rows to also sum ``MLP(...)`` into, as ``sum_incoming`` does.
        num_nodes: rows of that sum.

    Returns:
        ``(out [R, F_out], incoming [num_nodes, F_out] or None)``, as ``mlp`` on the concatenated inputs.
    """
    first, *rest = mlp.linears
    norm = mlp.norm
    if _tile_by_tile(inputs[0]):
        layout, tensors, index = _mlp_layout(mlp, inputs, weights, gather, residual, receivers is not None)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            out = TiledMLP.apply(layout, num_nodes, receivers, *index, *tensors)
            return out if layout.scatter else (out, None)
        return _tiled_forward(layout, num_nodes, index, receivers, tensors, save=False)[0]
    h = first.bias
    if gather is not None:  # projected per node (the bias in the last projection), then gathered
        table = _gather_table(gather[:2], first.bias)
        h = sum(table.index_select(0, rows) for rows in _gather_rows(gather.index).unbind(1))
    for x, w in zip(inputs, weights):
        h = torch.addmm(h, x, w.T)  # [R, H]
    for layer in rest:
        h = torch.addmm(layer.bias, h.relu_(), layer.weight.T)
    y = h if norm is None else norm(h)  # in float32 under autocast (``LayerNorm``)
    incoming = None if receivers is None else sum_incoming(y, receivers, num_nodes)
    return inputs[0] + y if residual else y, incoming


@dataclass(frozen=True)
class _Layout:
    """What ``TiledMLP`` computes and how its flat tensor arguments are laid out.

    The tensors are: ``num_inputs`` inputs, their first-layer weights, the first bias, the (weight, bias) of
    each of the ``num_layers`` later Linears, the LayerNorm's weight and bias unless ``eps`` is None, then, with
    ``gather`` > 0, the gathered nodes and that many projection weights (``Gather``). ``residual`` adds the first
    input to the output; ``scatter`` also sums the MLP's output by receivers.
    """

    num_inputs: int
    num_layers: int
    gather: int
    eps: float | None
    residual: bool
    scatter: bool

    @property
    def num_tensors(self) -> int:
        """Return the number of flat tensor arguments."""
        gathered = self.gather + 1 if self.gather else 0
        return 2 * self.num_inputs + 1 + 2 * self.num_layers + (0 if self.eps is None else 2) + gathered

    def unpack(self, tensors: Sequence[Tensor]):
        """Return (inputs, first weights, first bias, later (weight, bias)s, LayerNorm's or None, (gathered nodes,
        their weights) or None)."""
        n, m = self.num_inputs, self.num_layers
        xs, ws, b0 = tensors[:n], tensors[n : 2 * n], tensors[2 * n]
        i = 2 * n + 1
        layers = [(tensors[i + 2 * k], tensors[i + 2 * k + 1]) for k in range(m)]
        i += 2 * m
        norm = None if self.eps is None else (tensors[i], tensors[i + 1])
        i += 0 if self.eps is None else 2
        gathered = (tensors[i], tensors[i + 1 : i + 1 + self.gather]) if self.gather else None
        return xs, ws, b0, layers, norm, gathered


def _tile_rows(widths: Sequence[int]) -> int:
    """Return the rows per tile for layers of these widths: ~TILE_ELEMENTS values of the widest per thread."""
    return max(1, TILE_ELEMENTS * torch.get_num_threads() // max(widths))


def _gather_table(gathered, bias):
    """The PyTorch paths' projections: [M J, H], row ``J m + j`` holding ``nodes[m] @ weights[j].T`` (plus
    ``bias`` for the last j: each row gathers it once). One GEMM for all J."""
    nodes, weights = gathered
    count, width = len(weights), weights[0].shape[0]
    biases = torch.cat([bias.new_zeros((count - 1) * width), bias])
    return torch.addmm(biases, nodes, torch.cat(weights).T).view(-1, width)


def _gather_rows(index):
    """The rows [R, J] of ``_gather_table`` each row sums (``embedding_bag(rows, table, mode="sum")``)."""
    return torch.stack([i * len(index) + j for j, i in enumerate(index)], dim=1)


def _gather_grads(g_table, gathered, need_nodes):
    """From the gathered projections' gradient [M, J, H] (or [M J, H]): the flat gradients of the nodes (None
    unless ``need_nodes``) and of each projection weight; none without a gather."""
    if gathered is None:
        return []
    nodes, weights = gathered
    g = g_table.reshape(nodes.shape[0], -1)  # [M, J H]
    g_nodes = g @ torch.cat(weights) if need_nodes else None
    return [g_nodes, *(g.T @ nodes).split(weights[0].shape[0])]


def _tile_by_tile(x: Tensor) -> bool:
    """Whether ``fused_mlp`` runs tile by tile (``TiledMLP``, the fused CPU kernel where it can) on inputs like
    ``x``: float on the CPU, outside ``torch.compile``."""
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()


def _mlp_layout(mlp: MLP, inputs, weights, gather: Gather | None, residual: bool, scatter: bool):
    """Return ``fused_mlp``'s arguments as ``TiledMLP`` takes them: ``(layout, tensors, index)``."""
    first, *rest = mlp.linears
    eps = None if mlp.norm is None else mlp.norm.eps
    layout = _Layout(len(inputs), len(rest), 0 if gather is None else len(gather.index), eps, residual, scatter)
    tensors = [*inputs, *weights, first.bias]
    tensors += [p for layer in rest for p in (layer.weight, layer.bias)]
    tensors += [] if mlp.norm is None else [mlp.norm.weight, mlp.norm.bias]
    tensors += [] if gather is None else [gather.nodes, *gather.weights]
    return layout, tensors, () if gather is None else tuple(gather.index)


def _kernel_widths(xs, ws, layers, gathered, per_thread_rows):
    """The widths the fused CPU kernel would run this MLP at (``cpu_kernel.padded_widths``), or None where it
    cannot run it (``cpu_kernel.supports``)."""
    widths = cpu_kernel.padded_widths(cpu_kernel.linear_widths(ws, layers))
    tensors = [*xs, *ws, *([] if gathered is None else [gathered[0], *gathered[1]])]
    return widths if cpu_kernel.supports(tensors, widths, per_thread_rows) else None


def _kernel_fit(layout, tensors, num_nodes):
    """The widths the fused CPU kernel runs ``TiledMLP``'s MLP at, or None where it cannot run it."""
    xs, ws, _, layers, _, gathered = layout.unpack(tensors)
    padded = _kernel_widths(xs, ws, layers, gathered, num_nodes if layout.scatter else 0)
    return None if layout.residual and xs[0].shape[1] != cpu_kernel.linear_widths(ws, layers)[-1] else padded


def _kernel_pass(layout, num_nodes, index, receivers, tensors, padded, saved=None, into=None, incoming=None):
    """``TiledMLP``'s MLP as a pass of the fused CPU kernel at widths ``padded`` (``_kernel_fit``): return
    ``cpu_kernel.forward_pass``'s ``(pass, out, incoming or None)``."""
    xs, ws, b0, layers, norm, gathered = layout.unpack(tensors)
    ws, b0, layers, gathered = _pad_hidden(ws, b0, layers, gathered, padded)
    return cpu_kernel.forward_pass(
        xs, ws, b0, layers, None if norm is None else (*norm, layout.eps),
        None if gathered is None else (*gathered, index), layout.residual, receivers, num_nodes, saved, into, incoming,
    )


def _pad_to(t: Tensor, *shape: int) -> Tensor:
    """``t`` with zeros appended along each dimension up to ``shape`` (``t`` itself if it has that shape)."""
    if tuple(t.shape) == shape:
        return t
    return F.pad(t, [p for size, want in zip(reversed(t.shape), reversed(shape)) for p in (0, want - size)])


def _pad_hidden(ws, b0, layers, gathered, widths):
    """First-layer weights and bias, later (weight, bias)s and gathered projection weights with the hidden
    widths zero-padded to ``widths`` (``cpu_kernel.padded_widths``): zero units, the same function."""
    ws = [_pad_to(w, widths[0], w.shape[1]) for w in ws]
    if gathered is not None:
        gathered = (gathered[0], [_pad_to(w, widths[0], w.shape[1]) for w in gathered[1]])
    layers = [(_pad_to(w, widths[k + 1], widths[k]), _pad_to(b, widths[k + 1])) for k, (w, b) in enumerate(layers)]
    return ws, _pad_to(b0, widths[0]), layers, gathered


def _tiled_forward(layout, num_nodes, index, receivers, tensors, save):
    """Run ``TiledMLP``'s computation; return ((out, incoming or None), saved tensors or None).

    With ``save``, every post-ReLU activation, the LayerNorm input and its mean and rstd are written to
    full-size buffers (what autograd would keep); without it, each layer writes one tile-sized buffer, reused
    by every tile (it stays in cache). The fused CPU kernel, where it runs, does all of it in one call.
    """
    xs, ws, b0, layers, norm, gathered = layout.unpack(tensors)
    rows, last = xs[0].shape[0], len(layers)
    widths = cpu_kernel.linear_widths(ws, layers)
    padded = _kernel_fit(layout, tensors, num_nodes)
    acts = pre_norm = mean = rstd = None
    if save:  # the kernel's activations in its padded widths (the backward pass reads what it needs)
        acts = [xs[0].new_empty(rows, w) for w in (padded or widths)[:-1]]  # post-ReLU, [R, H_k]
        if norm is not None:
            pre_norm = xs[0].new_empty(rows, widths[-1])
            mean, rstd = xs[0].new_empty(rows, 1), xs[0].new_empty(rows, 1)
    if padded is not None:
        saved = (acts, pre_norm, mean, rstd) if save else None
        run, out, incoming = _kernel_pass(layout, num_nodes, index, receivers, tensors, padded, saved)
        cpu_kernel.run_forward([run])
        return (out, incoming), saved
    out = xs[0].new_empty(rows, widths[-1])
    tile = _tile_rows(widths)
    w_ts = [w.T.contiguous() for w in ws]  # [F_k, H]: the GEMMs run faster on row-major right operands
    layer_ts = [(w.T.contiguous(), b) for w, b in layers]
    table = None if gathered is None else _gather_table(gathered, b0)
    table_rows = None if gathered is None else _gather_rows(index)
    incoming = out.new_zeros(num_nodes, widths[-1]) if layout.scatter else None
    if not save:  # one tile per layer (the first is unused with a gather: embedding_bag allocates the tile)
        scratch = [out.new_empty(min(tile, rows), w) for w in widths]
    for start in range(0, rows, tile):
        sl = slice(start, min(start + tile, rows))
        for k in range(last + 1):
            if save:
                saved = acts[k] if k < last else pre_norm
                dst = None if saved is None else saved[sl]
            else:
                dst = scratch[k][: sl.stop - start]
            if k == 0:
                if table is not None:  # the gathered rows (with the bias); add to them (in place unless saving)
                    h = F.embedding_bag(table_rows[sl], table, mode="sum")
                    h = torch.addmm(h, xs[0][sl], w_ts[0], out=dst if save else h)
                else:
                    h = torch.addmm(b0, xs[0][sl], w_ts[0], out=dst)
                for x, w_t in zip(xs[1:], w_ts[1:]):
                    torch.addmm(h, x[sl], w_t, out=h)  # not addmm_, which FLOP counters skip
            else:
                h = torch.addmm(layer_ts[k - 1][1], h, layer_ts[k - 1][0], out=dst)
            if k < last:
                h.relu_()
        y = h
        if norm is not None:
            y, m, r = torch.native_layer_norm(h, (widths[-1],), norm[0], norm[1], layout.eps)
            if save:
                mean[sl], rstd[sl] = m, r
        if layout.residual:
            torch.add(xs[0][sl], y, out=out[sl])
        else:
            out[sl] = y
        if incoming is not None:
            incoming.index_add_(0, receivers[sl], y)
    return (out, incoming), (acts, pre_norm, mean, rstd) if save else None


class TiledMLP(torch.autograd.Function):
    """``fused_mlp`` on CPU: an MLP with a split first layer, run and differentiated tile by tile over rows.

    Arguments are ``(layout, num_nodes, receivers, *index, *tensors)`` as ``_Layout`` describes (``index``: the
    gather's, ``layout.gather`` of them); returns ``out``, or ``(out, incoming)`` with ``layout.scatter``. The
    backward pass walks the same tiles through the layers in reverse, accumulating weight gradients with
    ``addmm_`` and the gathered projections' with ``index_add_`` (or, where it runs, is one call of the fused CPU
    kernel's backward).
    """

    @staticmethod
    def forward(ctx, layout, num_nodes, receivers, *args):
        index, tensors = args[: layout.gather], args[layout.gather :]
        (out, incoming), (acts, pre_norm, mean, rstd) = _tiled_forward(
            layout, num_nodes, index, receivers, tensors, save=True
        )
        ctx.layout = layout
        optional = [t for t in (receivers, pre_norm, mean, rstd) if t is not None]
        ctx.save_for_backward(*tensors, *acts, *index, *optional)
        return (out, incoming) if layout.scatter else out

    @staticmethod
    def backward(ctx, grad_out, grad_incoming=None):
        layout, needs = ctx.layout, ctx.needs_input_grad[3 + ctx.layout.gather :]  # per flat tensor
        saved = list(ctx.saved_tensors)
        tensors, saved = saved[: layout.num_tensors], saved[layout.num_tensors :]
        acts, saved = saved[: layout.num_layers], saved[layout.num_layers :]
        index, saved = saved[: layout.gather], saved[layout.gather :]
        receivers = saved.pop(0) if layout.scatter else None
        pre_norm, mean, rstd = saved if layout.eps is not None else (None, None, None)
        xs, ws, b0, layers, norm, gathered = layout.unpack(tensors)
        skip = (None,) * (3 + layout.gather)  # layout, num_nodes, receivers, index

        grad_out = grad_out.contiguous()
        needs_x = needs[: layout.num_inputs]
        need_nodes = needs[layout.num_tensors - layout.gather - 1]
        widths = cpu_kernel.linear_widths(ws, layers)
        own_rows = 0 if gathered is None else gathered[0].shape[0] * layout.gather  # the threads' own sums
        padded = _kernel_widths(xs, ws, layers, gathered, own_rows)
        if (
            padded is not None
            and all(x.shape[1] % 32 == 0 for x in xs)
            and [a.shape[1] for a in acts] == padded[:-1]  # the forward pass ran the kernel too
        ):
            p_ws, p_b0, p_layers, p_gathered = _pad_hidden(ws, b0, layers, gathered, padded)
            g_xs, g_ws, g_b0, g_layers, g_norm, g_table = cpu_kernel.mlp_backward(
                xs, p_ws, p_b0, p_layers, norm, (acts, pre_norm, mean, rstd), grad_out, needs_x,
                None if gathered is None else (*p_gathered, index), layout.residual, receivers, grad_incoming,
            )
            h0 = widths[0]  # the padding's gradients dropped
            g_ws, g_b0 = [g[:h0] for g in g_ws], g_b0[:h0]
            g_layers = [
                (g_w[: w.shape[0], : w.shape[1]], g_b[: b.shape[0]]) for (g_w, g_b), (w, b) in zip(g_layers, layers)
            ]
            g_norm = g_norm or ()
            g_table = None if g_table is None else g_table[..., :h0]
        else:  # PyTorch ops, tile by tile
            table_rows = None if gathered is None else _gather_rows(index)
            g_table = None if gathered is None else b0.new_zeros(gathered[0].shape[0] * layout.gather, b0.shape[0])
            g_xs = [x.new_empty(x.shape) if need else None for x, need in zip(xs, needs_x)]
            g_ws = [torch.zeros_like(w) for w in ws]
            g_b0 = torch.zeros_like(b0)
            g_layers = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
            g_norm = () if norm is None else (torch.zeros_like(norm[0]), torch.zeros_like(norm[1]))
            rows = grad_out.shape[0]
            tile = _tile_rows(widths)
            for start in range(0, rows, tile):
                sl = slice(start, min(start + tile, rows))
                g = grad_out[sl]  # d loss / d MLP output, then walked back through the layers
                if receivers is not None:
                    g = grad_incoming.index_select(0, receivers[sl]).add_(g)
                if norm is not None:
                    g, gw, gb = torch.ops.aten.native_layer_norm_backward(
                        g, pre_norm[sl], (g.shape[1],), mean[sl], rstd[sl], norm[0], norm[1], [True, True, True]
                    )
                    g_norm[0].add_(gw)
                    g_norm[1].add_(gb)
                for k in range(layout.num_layers, 0, -1):  # Linear k reads the post-ReLU activation acts[k - 1]
                    (weight, _), (g_weight, g_bias) = layers[k - 1], g_layers[k - 1]
                    a = acts[k - 1][sl, : weight.shape[1]]  # the kernel's forward pass saves them padded
                    g_bias.add_(g.sum(0))
                    g_weight.addmm_(g.T, a)
                    g = g @ weight
                    torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=g)  # ReLU's backward
                g_b0.add_(g.sum(0))
                for i, (x, w, g_x, g_w) in enumerate(zip(xs, ws, g_xs, g_ws)):
                    g_w.addmm_(g.T, x[sl])
                    if g_x is not None and i == 0 and layout.residual:
                        torch.addmm(grad_out[sl], g, w, out=g_x[sl])
                    elif g_x is not None:
                        torch.mm(g, w, out=g_x[sl])
                if g_table is not None:
                    for table_index in table_rows[sl].unbind(1):
                        g_table.index_add_(0, table_index, g)
        grads = [*g_xs, *g_ws, g_b0, *(g for pair in g_layers for g in pair), *g_norm]
        return (*skip, *grads, *_gather_grads(g_table, gathered, need_nodes))


class GraphNetBlock(nn.Module):
    """One message-passing step of MeshGraphNets (Pfaff et al., ICLR 2021, https://arxiv.org/abs/2010.03409).

    For each edge set k: ``e'_k = MLP_k([v_s; v_r; e_k])``; then ``v' = MLP_v([v; sum_{k} sum_{in} e'_k])``;
    outputs ``v + v'`` and ``e_k + e'_k``.

    Args:
        latent_size: width of node and edge latents.
        edge_sets: names of the edge sets (e.g. ``("mesh",)`` or ``("mesh", "world")``).
        hidden_layers: hidden layers per MLP.
        fused: split the first layers instead of concatenating (same function, less work; see the module doc).
    """

    def __init__(self, latent_size: int, edge_sets: Sequence[str], hidden_layers: int = 2, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.edge_mlps = nn.ModuleDict(
            {name: MLP(3 * latent_size, latent_size, latent_size, hidden_layers) for name in edge_sets}
        )
        self.node_mlp = MLP((1 + len(edge_sets)) * latent_size, latent_size, latent_size, hidden_layers)

    def forward(self, nodes: Tensor, edges: dict[str, Tensor], topology: Topology) -> tuple[Tensor, dict[str, Tensor]]:
        """Update node latents [N, L] and each edge set's latents [E_k, L]; return both."""
        new_edges, inputs = {}, [nodes]
        for name, mlp in self.edge_mlps.items():
            senders, receivers = topology[name]
            if self.fused:  # the residual and the sum over incoming edges are taken tile by tile, in cache
                gather, w_edge = split_edge_mlp(mlp, nodes, senders, receivers)
                new_edges[name], incoming = fused_mlp(
                    mlp, [edges[name]], [w_edge], gather, True, receivers, nodes.shape[0]
                )
            else:
                e = edge_mlp_forward(mlp, nodes, edges[name], senders, receivers, fused=False)
                new_edges[name], incoming = edges[name] + e, sum_incoming(e, receivers, nodes.shape[0])
            inputs.append(incoming)
        if self.fused:
            return fused_mlp(self.node_mlp, inputs, input_columns(self.node_mlp, inputs), residual=True)[0], new_edges
        return nodes + self.node_mlp(torch.cat(inputs, dim=-1)), new_edges


def run_blocks(
    blocks: Sequence[GraphNetBlock], nodes: Tensor, edges: dict[str, Tensor], topology: Topology
) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Run fused ``GraphNetBlock``s without autograd in one call of the fused CPU kernel: every MLP a pass of
    it, with no return to Python between them. Returns the latents after the last block (the first block writes
    new ones, the later ones update those in place), or None where the kernel cannot run these blocks (autograd
    on, a block not fused, widths it does not take): then run them one by one, to the same floats."""
    if torch.is_grad_enabled() or not _tile_by_tile(nodes) or not all(block.fused for block in blocks):
        return None
    passes, sums, num_nodes = [], {}, nodes.shape[0]

    def add(mlp, inputs, weights, gather=None, receivers=None, into=None, incoming=None):
        layout, tensors, index = _mlp_layout(mlp, inputs, weights, gather, True, receivers is not None)
        padded = _kernel_fit(layout, tensors, num_nodes)
        if padded is None:
            return None
        run, out, incoming = _kernel_pass(layout, num_nodes, index, receivers, tensors, padded, None, into, incoming)
        passes.append(run)
        return out, incoming

    for i, block in enumerate(blocks):
        inputs, updated = [nodes], {}
        for name, mlp in block.edge_mlps.items():
            senders, receivers = topology[name]
            gather, w_edge = split_edge_mlp(mlp, nodes, senders, receivers)
            outputs = add(mlp, [edges[name]], [w_edge], gather, receivers, edges[name] if i else None, sums.get(name))
            if outputs is None:
                return None
            updated[name], sums[name] = outputs  # each edge set's sum: one buffer, rewritten block after block
            inputs.append(sums[name])
        outputs = add(block.node_mlp, inputs, input_columns(block.node_mlp, inputs), into=nodes if i else None)
        if outputs is None:
            return None
        nodes, edges = outputs[0], updated
    if passes:  # no blocks: nothing to run
        cpu_kernel.run_forward(passes)
    return nodes, edges
