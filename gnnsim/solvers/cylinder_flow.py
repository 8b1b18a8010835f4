"""Incompressible flow past a cylinder in a channel (DeepMind's cylinder_flow), and its data generator.

The solver is P1/P1 finite elements on a gmsh triangle mesh with a pressure-correction projection
(incremental, Goda/IPCS type). Every matrix is assembled once; the two linear systems are factorised
once (the momentum one again only when the time step changes)::

    1. tentative velocity  M (u* - u^n)/dt + nu K (u* + u^n)/2 = -(3/2 C(u^n) - 1/2 C(u^n-1)) - G p^n
    2. pressure            K p^n+1 = -D û / dt,   û = u* + dt M_L^-1 G p^n,   p = 0 on the outflow
    3. correction          u^n+1 = û - dt M_L^-1 G p^n+1

with velocity prescribed on inflow and walls. M is the consistent mass matrix, M_L the lumped one, K the
stiffness matrix, G the gradient (``∫ φ_i ∂p``), D the divergence (``∫ q div u``), C the Galerkin convection
term: explicit Adams-Bashforth convection, Crank-Nicolson diffusion, stable up to a CFL number of about 1.
The correction uses M_L^-1 on the pressure gradient only; smoothing u* with M_L^-1 M kills the shedding.

Step 2 is the incremental K (p^n+1 - p^n) = -D u*/dt with the term -(K - K~) p^n added, where
K~ = -D M_L^-1 G is the Laplacian that the correction actually applies. Then D u^n+1 = -dt (K - K~) p^n+1:
the mismatch of the two Laplacians damps the checkerboard pressure modes that the equal-order P1/P1 pair
cannot control, as in Chorin's scheme, and unlike the plain incremental form it does not vanish in steady
flow (there the plain form let them grow: 9 % pressure error in Poiseuille flow after 10 s, 0.8 % here).
Density is 1: pressures are kinematic.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import SuperLU, splu

from gnnsim.data.format import Schema, dynamic, static
from gnnsim.data.generate import generate_split, trajectory_seeds
from gnnsim.graph import NodeType
from gnnsim.solvers.mesh import Channel, mesh_channel


@dataclass(frozen=True, eq=False)
class P1Operators:
    """Linear-triangle finite-element operators of one mesh, assembled once."""

    # Per-cell arrays are stored vertex-major ([3, C]) so that sums over a cell's vertices are fast.
    vertices: np.ndarray  # [3, C] int64 node of each cell vertex
    vertices_flat: np.ndarray  # [3C] the same, flattened, for scatter-adds
    area12: np.ndarray  # [C] cell area / 12
    dphi: tuple[np.ndarray, np.ndarray]  # [3, C] each: ∂φ_a/∂x, ∂φ_a/∂y of the hat functions
    mass: sparse.csr_matrix  # [N, N] ∫ φ_i φ_j
    lumped: np.ndarray  # [N] row sums of the mass matrix
    stiffness: sparse.csr_matrix  # [N, N] ∫ ∇φ_i · ∇φ_j
    grad: tuple[sparse.csr_matrix, sparse.csr_matrix]  # [N, N] each: ∫ φ_i ∂φ_j/∂x, ∫ φ_i ∂φ_j/∂y
    cell_size: np.ndarray  # [C] smallest altitude of each cell


def assemble_p1(mesh_pos: np.ndarray, cells: np.ndarray) -> P1Operators:
    """Assemble the P1 mass, stiffness and gradient matrices of a counter-clockwise triangle mesh.

    Args:
        mesh_pos: `[N, 2]` node positions.
        cells: `[C, 3]` counter-clockwise triangles.

    Returns:
        The operators; all sparse matrices are CSR.
    """
    pos = np.asarray(mesh_pos, dtype=np.float64)
    cells = np.asarray(cells, dtype=np.int64)
    n = len(pos)
    x = pos[cells]  # [C, 3, 2]
    # Edge opposite vertex a: x[a+2] - x[a+1]; the hat gradient is that edge rotated by +90 deg over 2A.
    opposite = np.roll(x, -2, axis=1) - np.roll(x, -1, axis=1)  # [C, 3, 2]
    twice_area = opposite[:, 0, 0] * opposite[:, 1, 1] - opposite[:, 0, 1] * opposite[:, 1, 0]  # [C]
    if np.any(twice_area <= 0):
        raise ValueError(f"cells: {int(np.sum(twice_area <= 0))} triangles are degenerate or clockwise")
    area = 0.5 * twice_area
    dphi = np.stack([-opposite[..., 1], opposite[..., 0]], axis=-1) / twice_area[:, None, None]  # [C, 3, 2]

    rows = np.repeat(cells, 3, axis=1).ravel()  # [9C] i of (i, j) for each local pair
    cols = np.tile(cells, (1, 3)).ravel()  # [9C]

    def assemble(local: np.ndarray) -> sparse.csr_matrix:
        return sparse.coo_matrix((local.ravel(), (rows, cols)), shape=(n, n)).tocsr()

    mass = assemble(area[:, None, None] / 12 * (np.ones((3, 3)) + np.eye(3)))
    stiffness = assemble(area[:, None, None] * np.einsum("cad,cbd->cab", dphi, dphi))
    grad_x = assemble(np.broadcast_to(area[:, None, None] / 3 * dphi[:, None, :, 0], (len(cells), 3, 3)))
    grad_y = assemble(np.broadcast_to(area[:, None, None] / 3 * dphi[:, None, :, 1], (len(cells), 3, 3)))
    longest = np.linalg.norm(opposite, axis=-1).max(axis=1)  # [C]
    return P1Operators(
        vertices=np.ascontiguousarray(cells.T),
        vertices_flat=np.ascontiguousarray(cells.T).ravel(),
        area12=area / 12,
        dphi=(np.ascontiguousarray(dphi[..., 0].T), np.ascontiguousarray(dphi[..., 1].T)),
        mass=mass,
        lumped=np.asarray(mass.sum(axis=1)).ravel(),
        stiffness=stiffness,
        grad=(grad_x, grad_y),
        cell_size=twice_area / longest,
    )


def convection(ops: P1Operators, u: np.ndarray) -> np.ndarray:
    """Return the Galerkin convection term ∫ φ_i (u·∇)u of a P1 velocity field (exact for P1).

    Args:
        ops: the mesh operators.
        u: `[N, 2]` nodal velocity.

    Returns:
        `[N, 2]` the term tested against each hat function.
    """
    ux, uy = u[:, 0][ops.vertices], u[:, 1][ops.vertices]  # [3, C] each
    dx, dy = ops.dphi
    # Velocity gradient, constant per cell: g_kd = ∂u_k/∂x_d.
    gxx, gxy, gyx, gyy = (ux * dx).sum(0), (ux * dy).sum(0), (uy * dx).sum(0), (uy * dy).sum(0)  # [C]
    # ∫ φ_a φ_b = A/12 (1 + δ_ab): mass-weighted vertex velocity Σ_b M_ab u_b = A/12 (u_a + Σ_b u_b).
    wx, wy = (ux + ux.sum(0)) * ops.area12, (uy + uy.sum(0)) * ops.area12  # [3, C]
    n = len(u)
    return np.stack(
        [
            np.bincount(ops.vertices_flat, (wx * gxx + wy * gxy).ravel(), minlength=n),
            np.bincount(ops.vertices_flat, (wx * gyx + wy * gyy).ravel(), minlength=n),
        ],
        axis=1,
    )


def _factorize_dirichlet(a: sparse.spmatrix, rows: np.ndarray) -> SuperLU:
    """Factorise the symmetric matrix `a` with the given rows and columns replaced by the identity's.

    Keeping the matrix symmetric (the columns' contribution moves to the right-hand side, see
    `ProjectionSolver.set_dt`) lets SuperLU use a symmetric ordering with diagonal pivots, which
    fills in about a quarter less than the default.
    """
    keep = np.ones(a.shape[0])
    keep[rows] = 0.0
    mask = sparse.diags(keep)
    reduced = (mask @ a @ mask + sparse.diags(1.0 - keep)).tocsc()
    return splu(reduced, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})


class ProjectionSolver:
    """IPCS projection for incompressible Navier-Stokes on one P1 mesh (see the module docstring).

    Velocity is prescribed on `dirichlet` nodes (both components) and pressure is zero on `outflow` nodes;
    elsewhere on the boundary the natural condition nu ∂u/∂n = 0 holds, which together with p = 0 is the
    do-nothing outflow condition nu ∂u/∂n - p n = 0.

    Attributes:
        velocity: `[N, 2]` current velocity.
        pressure: `[N]` current kinematic pressure.
        time: simulated time.
        dt: current time step (`advance` adapts it to the flow).
    """

    def __init__(
        self,
        ops: P1Operators,
        dirichlet: np.ndarray,
        outflow: np.ndarray,
        boundary_velocity: np.ndarray,
        viscosity: float,
        dt: float,
        initial_velocity: np.ndarray | None = None,
    ):
        """Build the solver and factorise its matrices.

        Args:
            ops: the mesh operators.
            dirichlet: `[N]` bool, nodes with prescribed velocity.
            outflow: `[N]` bool, nodes with zero pressure; at least one.
            boundary_velocity: `[N, 2]` velocity imposed on the dirichlet nodes (other rows are ignored).
            viscosity: kinematic viscosity.
            dt: initial time step.
            initial_velocity: `[N, 2]` start field (default zero); the dirichlet values are imposed on it.
        """
        if not np.any(outflow):
            raise ValueError("outflow: expected at least one zero-pressure node, got none")
        if viscosity <= 0:
            raise ValueError(f"viscosity: expected > 0, got {viscosity}")
        self.ops = ops
        self.viscosity = viscosity
        n = len(ops.lumped)
        self._fixed = np.flatnonzero(dirichlet)
        self._fixed_values = np.asarray(boundary_velocity, dtype=np.float64)[self._fixed]  # [F, 2]
        self._outflow = np.flatnonzero(outflow)
        gx, gy = ops.grad
        self._grad = sparse.vstack([gx, gy]).tocsr()  # [2N, N] p -> (∫ φ ∂p/∂x, ∫ φ ∂p/∂y)
        self._div = sparse.hstack([gx, gy]).tocsr()  # [N, 2N] (u_x, u_y) -> ∫ q div u
        self._grad_t = sparse.vstack([gx.T, gy.T]).tocsr()  # [2N, N] p -> ∫ p ∂φ/∂x, ∫ p ∂φ/∂y
        self._poisson = _factorize_dirichlet(ops.stiffness, self._outflow)
        self.velocity = (
            np.zeros((n, 2)) if initial_velocity is None else np.array(initial_velocity, dtype=np.float64)
        )
        self.velocity[self._fixed] = self._fixed_values
        self.pressure = np.zeros(n)
        self.time = 0.0
        self._previous = self.velocity.copy()  # velocity one step back, for forces
        self._history: np.ndarray | None = None  # convection one step back, for Adams-Bashforth
        self.dt = 0.0
        self.set_dt(dt)

    def set_dt(self, dt: float) -> None:
        """Change the time step: refactorise the momentum matrix and restart Adams-Bashforth."""
        if not dt > 0:
            raise ValueError(f"dt: expected > 0, got {dt}")
        ops = self.ops
        self.dt = dt
        self._explicit = (ops.mass / dt - 0.5 * self.viscosity * ops.stiffness).tocsr()
        implicit = ops.mass / dt + 0.5 * self.viscosity * ops.stiffness
        self._momentum = _factorize_dirichlet(implicit, self._fixed)
        # Lifting: the dirichlet columns of the implicit matrix, applied to the prescribed velocity.
        prescribed = np.zeros((len(ops.lumped), 2))
        prescribed[self._fixed] = self._fixed_values
        self._lift = implicit @ prescribed  # [N, 2]
        self._correct = (
            sparse.diags(np.tile(dt / ops.lumped, 2)) @ self._grad
        ).tocsr()  # [2N, N] dt M_L^-1 G
        self._lumped_dt = (ops.lumped / dt)[:, None]  # [N, 1]
        self._history = None
        self._old_correction = self._correction(self.pressure)  # [N, 2] dt M_L^-1 G p^n, cached per step
        self._correction_of = self.pressure

    def speed_rate(self) -> float:
        """Return the largest |u| / h over cells (h: smallest altitude); times dt it is the CFL number."""
        speed = np.sqrt((self.velocity**2).sum(axis=1))[self.ops.vertices].max(axis=0)  # [C]
        return float(np.max(speed / self.ops.cell_size))

    def step(self) -> None:
        """Advance one time step of size `dt`."""
        u, p = self.velocity, self.pressure
        conv = convection(self.ops, u)  # [N, 2]
        ab = conv if self._history is None else 1.5 * conv - 0.5 * self._history
        self._history = conv
        if self._correction_of is not p:  # the pressure was set from outside
            self._old_correction, self._correction_of = self._correction(p), p
        # 1. Tentative velocity with the old pressure (G p on the free rows is M_L/dt times its correction).
        rhs = self._explicit @ u - ab - self._old_correction * self._lumped_dt - self._lift  # [N, 2]
        rhs[self._fixed] = self._fixed_values
        u_star = self._momentum.solve(rhs)  # [N, 2]
        # 2. New pressure: project u* + dt M_L^-1 G p^n, i.e. K (p^n+1 - p^n) = -D u*/dt - (K - K~) p^n.
        u_hat = u_star + self._old_correction  # [N, 2]
        rhs_p = self._div @ u_hat.T.ravel() / -self.dt  # [N]
        rhs_p[self._outflow] = 0.0
        p_new = self._poisson.solve(rhs_p)  # [N]
        # 3. Correction with the lumped mass.
        correction = self._correction(p_new)  # [N, 2]
        self._previous = u
        self.velocity = u_hat - correction
        self.pressure = p_new
        self._old_correction, self._correction_of = correction, p_new
        self.time += self.dt

    def _correction(self, p: np.ndarray) -> np.ndarray:
        """Return dt M_L^-1 G p on the free nodes and 0 on the dirichlet nodes, `[N, 2]`."""
        corr = (self._correct @ p).reshape(2, -1).T  # [N, 2]
        corr[self._fixed] = 0.0
        return corr

    def advance(self, duration: float, cfl: float) -> int:
        """Advance by `duration` in equal steps whose CFL number is at most about `cfl`.

        The step is chosen from the current velocity; the momentum matrix is refactorised only when the
        flow needs more steps, or 20 % fewer would do.

        Args:
            duration: time to advance, e.g. the time between stored frames.
            cfl: target CFL number (|u| dt / h, h the smallest cell altitude); explicit convection
                diverges from about 1.

        Returns:
            The number of steps taken.
        """
        needed = max(1, math.ceil(duration * self.speed_rate() / cfl))
        current = duration / self.dt
        if (
            abs(current - round(current)) > 1e-6 * current
            or needed > round(current)
            or needed <= 0.8 * current
        ):
            self.set_dt(duration / needed)
            current = needed
        steps = round(current)
        for _ in range(steps):
            self.step()
        if not np.isfinite(self.velocity).all():
            raise RuntimeError(
                f"solver diverged by t={self.time:.4g} (dt={self.dt:.3g}); lower cfl (got {cfl})"
            )
        return steps

    def force(self, nodes: np.ndarray) -> np.ndarray:
        """Return the force of the fluid on the boundary made of `nodes`, after the last step.

        Tests the momentum residual with a function that is 1 on those nodes and 0 on all other nodes (a
        volume integral, much more accurate than surface gradients of P1 fields)::

            F = -Σ_{i in nodes} [M (u^n+1 - u^n)/dt + C(u^n+1) + nu K u^n+1 - G^T p^n+1]_i

        Args:
            nodes: `[B]` indices of the (dirichlet) boundary nodes of one body.

        Returns:
            `[2]` force per unit depth at density 1 (drag and lift for a flow along +x).
        """
        n = len(self.pressure)
        u, ops = self.velocity, self.ops
        residual = (
            ops.mass @ (u - self._previous) / self.dt
            + convection(ops, u)
            + self.viscosity * (ops.stiffness @ u)
            - (self._grad_t @ self.pressure).reshape(2, n).T
        )  # [N, 2]
        return -residual[nodes].sum(axis=0)


def nodal_divergence(ops: P1Operators, u: np.ndarray) -> np.ndarray:
    """Return the divergence of a P1 velocity field tested against each hat function, M_L^-1 D u.

    This is the divergence a projection method controls (a P1 field is not divergence-free per cell).

    Args:
        ops: the mesh operators.
        u: `[N, 2]` nodal velocity.

    Returns:
        `[N]` ∫ φ_i div u / ∫ φ_i.
    """
    gx, gy = ops.grad
    return (gx @ u[:, 0] + gy @ u[:, 1]) / ops.lumped


def inflow_profile(y: np.ndarray, height: float, mean_speed: float) -> np.ndarray:
    """Return the parabolic channel profile u_x(y) = 6 U y (H - y) / H^2 of mean speed U (peak 1.5 U)."""
    return 6.0 * mean_speed * y * (height - y) / height**2


def node_types(mesh_pos: np.ndarray, channel: Channel) -> np.ndarray:
    """Return DeepMind cylinder_flow node types for a channel mesh.

    INFLOW on x = 0, OUTFLOW on x = length, WALL_BOUNDARY on y = 0, y = height and the cylinder, NORMAL
    elsewhere. All four corners are WALL_BOUNDARY: their velocity is held at zero like the rest of the wall
    (at the outflow corners the pressure is also zero, as on the whole line x = length).

    Args:
        mesh_pos: `[N, 2]` node positions; boundary nodes must lie on the boundary to 1e-8 of the length.
        channel: the geometry the mesh was made for.

    Returns:
        `[N]` int32 node types.
    """
    x, y = np.asarray(mesh_pos, dtype=np.float64).T
    tol = 1e-8 * max(channel.length, channel.height)
    types = np.full(len(x), NodeType.NORMAL, dtype=np.int32)
    types[np.abs(x) < tol] = NodeType.INFLOW
    types[np.abs(x - channel.length) < tol] = NodeType.OUTFLOW
    wall = (np.abs(y) < tol) | (np.abs(y - channel.height) < tol)
    if channel.radius > 0:
        wall |= np.abs(np.hypot(x - channel.center[0], y - channel.center[1]) - channel.radius) < tol
    types[wall] = NodeType.WALL_BOUNDARY
    return types


def channel_solver(
    mesh_pos: np.ndarray,
    cells: np.ndarray,
    node_type: np.ndarray,
    channel: Channel,
    mean_speed: float,
    viscosity: float,
    dt: float,
) -> ProjectionSolver:
    """Build the projection solver of a channel flow from its mesh and node types.

    Parabolic inflow of mean speed `mean_speed` on INFLOW nodes, no-slip on WALL_BOUNDARY nodes, zero
    pressure on every node of x = length. The flow starts from the inflow profile everywhere, which
    reaches periodic shedding sooner than a start from rest.

    Args:
        mesh_pos: `[N, 2]` node positions.
        cells: `[C, 3]` counter-clockwise triangles.
        node_type: `[N]` node types from `node_types`.
        channel: the geometry.
        mean_speed: mean inflow speed U.
        viscosity: kinematic viscosity.
        dt: initial time step.

    Returns:
        The solver at time 0.
    """
    y = mesh_pos[:, 1]
    profile = np.stack([inflow_profile(y, channel.height, mean_speed), np.zeros_like(y)], axis=1)  # [N, 2]
    inflow = node_type == NodeType.INFLOW
    boundary = np.where(inflow[:, None], profile, 0.0)  # [N, 2]
    outflow = np.abs(mesh_pos[:, 0] - channel.length) < 1e-8 * channel.length
    return ProjectionSolver(
        assemble_p1(mesh_pos, cells),
        dirichlet=inflow | (node_type == NodeType.WALL_BOUNDARY),
        outflow=outflow,
        boundary_velocity=boundary,
        viscosity=viscosity,
        dt=dt,
        initial_velocity=profile,
    )


FLOW_SCHEMA: Schema = {
    "mesh_pos": static("float32", "nodes", 2),
    "cells": static("int32", "cells", 3),
    "node_type": static("int32", "nodes"),
    "velocity": dynamic("float32", "nodes", 2),
    "pressure": dynamic("float32", "nodes", 1),
}

GENERATOR = "gnnsim.solvers.cylinder_flow"


def _range(value, name: str, above: float) -> tuple[float, float]:
    """Return `value` as a (low, high) float pair with above < low <= high, or raise naming the field."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (low, high) pair, got {value!r}") from None
    if not (above < lo <= hi):
        raise ValueError(f"{name}: expected {above:g} < low <= high, got ({lo:g}, {hi:g})")
    return lo, hi


@dataclass(frozen=True)
class CylinderFlowConfig:
    """Everything that defines a cylinder_flow data set; ranges are sampled uniformly per trajectory.

    The defaults give DeepMind's setting: a 1.6 x 0.41 channel, ~2k nodes, 600 frames 0.01 apart,
    Reynolds numbers 2 r U / nu of about 30 to 180, and a warm-up long enough for vortex shedding
    (which starts 1-3 s in). Invalid values raise a one-line ValueError naming the field.
    """

    num_steps: int = 600  # stored frames
    dt: float = 0.01  # time between stored frames
    warmup: float = 3.0  # simulated, then dropped (rounded to whole frames)
    length: float = 1.6
    height: float = 0.41
    center_x: tuple[float, float] = (0.2, 0.45)
    center_y: tuple[float, float] = (0.14, 0.27)
    radius: tuple[float, float] = (0.03, 0.06)
    inflow_speed: tuple[float, float] = (0.5, 1.5)  # mean speed U of the parabolic profile (peak 1.5 U)
    viscosity: float = 1e-3  # kinematic, density 1
    mesh_size: float = 0.04  # far-field element size
    cylinder_mesh_size: float = 0.005  # element size on the cylinder
    refine_distance: float = 0.4  # distance over which the size grows from cylinder_mesh_size to mesh_size
    cfl: float = 0.7  # substep CFL number (explicit convection is unstable from about 1)

    def __post_init__(self):
        for name, above in (
            ("center_x", -math.inf),
            ("center_y", -math.inf),
            ("radius", 0.0),
            ("inflow_speed", 0.0),
        ):
            object.__setattr__(self, name, _range(getattr(self, name), name, above))
        if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
            raise ValueError(f"num_steps: expected an integer >= 1, got {self.num_steps!r}")
        for name in (
            "dt",
            "length",
            "height",
            "viscosity",
            "mesh_size",
            "cylinder_mesh_size",
            "refine_distance",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if not self.warmup >= 0:
            raise ValueError(f"warmup: expected >= 0, got {self.warmup}")
        if not 0 < self.cfl <= 0.9:
            raise ValueError(
                f"cfl: expected 0 < cfl <= 0.9 (explicit convection diverges near 1), got {self.cfl}"
            )
        if self.cylinder_mesh_size > self.mesh_size:
            raise ValueError(
                f"cylinder_mesh_size: expected <= mesh_size ({self.mesh_size}), got {self.cylinder_mesh_size}"
            )
        # Every sampled cylinder must clear the channel walls by two cylinder cells.
        gap, r = 2 * self.cylinder_mesh_size, self.radius[1]
        for name, extent in (("center_x", self.length), ("center_y", self.height)):
            lo, hi = getattr(self, name)
            if lo - r < gap or hi + r > extent - gap:
                raise ValueError(
                    f"{name}: expected within [{r + gap:g}, {extent - r - gap:g}] so cylinders of radius "
                    f"up to {r:g} clear the walls by 2 x cylinder_mesh_size, got ({lo:g}, {hi:g})"
                )


def simulate_trajectory(seed: int, cfg: CylinderFlowConfig) -> dict[str, np.ndarray]:
    """Simulate one trajectory: draw the geometry and inflow from `seed`, mesh, warm up, record frames.

    Deterministic: the same seed and config give identical arrays.

    Args:
        seed: the trajectory's seed.
        cfg: the data set's configuration.

    Returns:
        Arrays as in `FLOW_SCHEMA`: `mesh_pos [N, 2]`, `cells [C, 3]`, `node_type [N]`,
        `velocity [T, N, 2]`, `pressure [T, N, 1]` with T = cfg.num_steps, frame k at time warmup + k dt.
    """
    rng = np.random.default_rng(seed)
    cx, cy, radius, speed = (
        float(rng.uniform(*getattr(cfg, f))) for f in ("center_x", "center_y", "radius", "inflow_speed")
    )
    channel = Channel(cfg.length, cfg.height, (cx, cy), radius)
    mesh_pos, cells = mesh_channel(channel, cfg.mesh_size, cfg.cylinder_mesh_size, cfg.refine_distance)
    types = node_types(mesh_pos, channel)
    solver = channel_solver(mesh_pos, cells, types, channel, speed, cfg.viscosity, dt=cfg.dt)
    velocity = np.empty((cfg.num_steps, len(mesh_pos), 2), dtype=np.float32)
    pressure = np.empty((cfg.num_steps, len(mesh_pos), 1), dtype=np.float32)
    try:
        for _ in range(round(cfg.warmup / cfg.dt)):
            solver.advance(cfg.dt, cfg.cfl)
        for k in range(cfg.num_steps):
            if k > 0:
                solver.advance(cfg.dt, cfg.cfl)
            velocity[k] = solver.velocity
            pressure[k, :, 0] = solver.pressure
    except RuntimeError as e:
        raise RuntimeError(
            f"seed {seed} (center {cx:.4g}, {cy:.4g}, radius {radius:.4g}, speed {speed:.4g}): {e}"
        ) from None
    return {
        "mesh_pos": mesh_pos.astype(np.float32),
        "cells": cells.astype(np.int32),
        "node_type": types,
        "velocity": velocity,
        "pressure": pressure,
    }


def split_seed(seed: int, split: str) -> int:
    """Return the seed of one split, derived from the data set seed and the split's name."""
    if seed < 0:
        raise ValueError(f"seed: expected >= 0, got {seed}")
    state = np.random.SeedSequence([seed, zlib.crc32(split.encode())]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def generate(
    out_dir: str | os.PathLike,
    cfg: CylinderFlowConfig,
    splits: Mapping[str, int],
    seed: int = 0,
    workers: int = 1,
) -> dict[str, Path]:
    """Generate a cylinder_flow data set: one file `out_dir/{split}.h5` per split.

    Each split draws its trajectory seeds from its own name, so splits never share a trajectory and
    changing one split's size leaves the others unchanged.

    Args:
        out_dir: output directory.
        cfg: the configuration, stored in each file's header with the seed and split.
        splits: split name -> number of trajectories, e.g. `{"train": 1000, "valid": 100, "test": 100}`.
        seed: data set seed.
        workers: processes running trajectories in parallel.

    Returns:
        Split name -> path written.
    """
    paths = {}
    for split, count in splits.items():
        if not (isinstance(count, int) and count >= 1):
            raise ValueError(f"splits['{split}']: expected an integer >= 1 trajectories, got {count!r}")
        paths[split] = generate_split(
            Path(out_dir) / f"{split}.h5",
            functools.partial(simulate_trajectory, cfg=cfg),
            trajectory_seeds(split_seed(seed, split), count),
            schema=FLOW_SCHEMA,
            dt=cfg.dt,
            generator=GENERATOR,
            config={"solver": dataclasses.asdict(cfg), "seed": seed, "split": split},
            workers=workers,
            desc=split,
        )
    return paths
