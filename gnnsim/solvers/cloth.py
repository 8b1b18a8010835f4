"""Ground truth for cloth: a flag on a pole in gusty wind, by implicit mass-spring dynamics.

The flag is a Delaunay triangulation of jittered grid points on the rectangle ``[0, width] x [0, height]`` of
rest coordinates ``mesh_pos = (u, v)``. It starts flat and at rest in the vertical plane ``y = 0``, node
``(u, v)`` at world ``(u, 0, v)``; the nodes on ``u = 0`` are pinned to the pole (HANDLE) and gravity points
along ``-z``, so the first frames show the sheet falling before the wind lifts it (``ClothConfig.warmup``
skips that release transient).

Elasticity: a stretch spring per mesh edge plus a quadratic hinge bending energy (``FlagModel``). Each substep
is one implicit-Euler step solved by projective dynamics (Liu et al. 2013, "Fast Simulation of Mass-Spring
Systems", https://doi.org/10.1145/2508363.2508406): a few local-global iterations whose global step is a
linear solve with one constant matrix, factorised once per trajectory. Mass-proportional damping enters that
matrix too; gravity and the wind force are explicit. The wind (``Wind``) has a mean speed and direction
varying over time (gusts) plus a frozen turbulent field convected with the mean flow; it pushes each triangle
with a pressure quadratic in the normal component of the relative wind, plus skin friction along it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial import Delaunay

from gnnsim.data.format import Schema, dynamic, static
from gnnsim.data.generate import generate_split, trajectory_seeds
from gnnsim.graph import NodeType

CLOTH_SCHEMA: Schema = {
    "mesh_pos": static("float32", "nodes", 2),
    "world_pos": dynamic("float32", "nodes", 3),
    "cells": static("int32", "cells", 3),
    "node_type": static("int32", "nodes"),
    "wind": dynamic("float32", "nodes", 3),
}

GENERATOR = "gnnsim.solvers.cloth"
_GUST_MODES = 3  # sinusoids summed into each gust signal
_TURBULENCE_MODES = 4  # plane waves summed into the turbulent wind field


@dataclass(frozen=True)
class ClothConfig:
    """Everything that defines a flag data set; ``(lo, hi)`` pairs are sampled uniformly per trajectory.

    Units are SI (m, s, kg). Attributes:
        num_steps: stored frames per trajectory.
        warmup: seconds simulated from the flat, at-rest start before frame 0 is stored (0 stores the start
            itself); a warm-up skips the release transient so trajectories open mid-flight, with the wind's
            effect already visible in the sheet's shape and velocity.
        dt: time between stored frames.
        substeps: implicit steps per stored frame.
        iterations: projective-dynamics local-global iterations per substep.
        num_nodes: approximate mesh size range (the jittered grid is sized to match it).
        width: flag length away from the pole.
        height: flag length along the pole.
        jitter: random displacement of interior grid points, as a fraction of the grid spacing.
        ripple: standard deviation of the initial sheet's random out-of-plane offsets (m); they break the
            mirror symmetry that would otherwise keep a flag in still air exactly planar.
        density: area density of the cloth (kg/m^2).
        stiffness: stretch stiffness of the sheet (N/m), see ``flag_model``.
        bending: bending modulus of the sheet (N m), see ``FlagModel``.
        damping: mass-proportional damping rate (1/s).
        gravity: gravitational acceleration along -z.
        drag: aerodynamic pressure coefficient, ``rho_air * C_n / 2`` (kg/m^3).
        friction: aerodynamic skin-friction coefficient, ``rho_air * C_f`` for both faces (kg/m^3).
        wind_speed: mean wind speed range.
        wind_angle: range of the mean wind's horizontal direction, degrees from +x (the flag's length).
        wind_wander: amplitude of the wind direction's slow variation (degrees).
        gust: relative amplitude range of speed gusts.
        gust_period: range of gust periods (s).
        turbulence: relative amplitude range of the turbulent field.
        turbulence_scale: range of turbulent wavelengths (m).
    """

    num_steps: int = 400
    warmup: float = 0.0
    dt: float = 0.02
    substeps: int = 4
    iterations: int = 8
    num_nodes: tuple[int, int] = (1300, 1700)
    width: tuple[float, float] = (1.6, 2.4)
    height: tuple[float, float] = (1.0, 1.4)
    jitter: float = 0.3
    ripple: float = 0.0001
    density: float = 0.2
    stiffness: float = 3000.0
    bending: float = 0.03
    damping: float = 0.1
    gravity: float = 9.81
    drag: float = 0.6
    friction: float = 0.04
    wind_speed: tuple[float, float] = (4.0, 12.0)
    wind_angle: tuple[float, float] = (-40.0, 40.0)
    wind_wander: float = 15.0
    gust: tuple[float, float] = (0.1, 0.4)
    gust_period: tuple[float, float] = (0.5, 3.0)
    turbulence: tuple[float, float] = (0.05, 0.2)
    turbulence_scale: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self):
        for name in ("num_steps", "substeps", "iterations"):
            self._check(name, _integer(getattr(self, name)) and getattr(self, name) >= 1, "an integer >= 1")
        for name in ("dt", "density", "stiffness"):
            self._check(name, _real(getattr(self, name)) and getattr(self, name) > 0, "a number > 0")
        for name in ("warmup", "ripple", "bending", "damping", "gravity", "drag", "friction", "wind_wander"):
            self._check(name, _real(getattr(self, name)) and getattr(self, name) >= 0, "a number >= 0")
        self._check("jitter", _real(self.jitter) and 0 <= self.jitter <= 0.4, "a number in [0, 0.4]")
        ok = _range(self.num_nodes) and all(map(_integer, self.num_nodes)) and self.num_nodes[0] >= 9
        self._check("num_nodes", ok, "(lo, hi) ints, 9 <= lo <= hi")
        for name in ("width", "height", "gust_period", "turbulence_scale"):
            pair = getattr(self, name)
            self._check(name, _range(pair) and pair[0] > 0, "(lo, hi), 0 < lo <= hi")
        for name in ("wind_speed", "turbulence"):
            pair = getattr(self, name)
            self._check(name, _range(pair) and pair[0] >= 0, "(lo, hi), 0 <= lo <= hi")
        ok = _range(self.gust) and self.gust[0] >= 0 and self.gust[1] < 1
        self._check("gust", ok, "(lo, hi), 0 <= lo <= hi < 1")
        self._check("wind_angle", _range(self.wind_angle), "(lo, hi) degrees, lo <= hi")
        # The wind force is explicit: the rate at which it damps the sheet's motion, times the substep, must
        # stay below 1 (here at the strongest wind the ranges allow).
        fastest = self.wind_speed[1] * (1 + self.gust[1] + self.turbulence[1])
        rate = 2 * (self.drag + self.friction) * fastest / self.density
        expected = f"an integer >= {math.ceil(rate * self.dt)} for this wind, drag, friction and density"
        self._check("substeps", rate * self.dt / self.substeps <= 1, expected)

    def _check(self, name: str, ok: bool, expected: str) -> None:
        """Raise a one-line ValueError naming field ``name`` unless ``ok``."""
        if not ok:
            raise ValueError(f"ClothConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

    @property
    def h(self) -> float:
        """Return the substep length."""
        return self.dt / self.substeps


def _real(x) -> bool:
    """Return whether ``x`` is a finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x) -> bool:
    """Return whether ``x`` is an int (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool)


def _range(x) -> bool:
    """Return whether ``x`` is a pair of finite numbers ``(lo, hi)`` with ``lo <= hi``."""
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(map(_real, x)) and x[0] <= x[1]


# ---------------------------------------------------------------------------------------------------------
# Mesh and elastic model


def flag_mesh(
    width: float, height: float, num_nodes: int, jitter: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the rectangle ``[0, width] x [0, height]`` by Delaunay on a jittered grid.

    Boundary points move only along their side and corners stay put, so the rectangle is covered exactly
    and the pole side ``u = 0`` keeps its nodes on the line.

    Args:
        width, height: rectangle sides.
        num_nodes: approximate number of nodes.
        jitter: random displacement, as a fraction of the grid spacing (< 0.5 keeps points distinct).
        rng: source of the jitter.

    Returns:
        mesh_pos: `[N, 2]` float64 rest coordinates.
        cells: `[C, 3]` int64 counter-clockwise triangles.
    """
    # Grid lines per unit length q such that (width q + 1) (height q + 1) = num_nodes.
    area, half_perimeter = width * height, width + height
    q = (math.sqrt(half_perimeter**2 + 4 * area * (num_nodes - 1)) - half_perimeter) / (2 * area)
    nu = max(2, round(width * q) + 1)
    nv = max(2, round(height * q) + 1)
    du, dv = width / (nu - 1), height / (nv - 1)
    u, v = np.meshgrid(np.linspace(0, width, nu), np.linspace(0, height, nv), indexing="ij")
    u, v = u.ravel(), v.ravel()  # [N]
    shift = rng.uniform(-jitter, jitter, size=(u.size, 2)) * (du, dv)  # [N, 2]
    on_u_side = np.isclose(u, 0) | np.isclose(u, width)
    on_v_side = np.isclose(v, 0) | np.isclose(v, height)
    u = u + np.where(on_u_side, 0.0, shift[:, 0])
    v = v + np.where(on_v_side, 0.0, shift[:, 1])
    mesh_pos = np.stack([u, v], axis=1)  # [N, 2]

    cells = Delaunay(mesh_pos).simplices.astype(np.int64)  # [C, 3]
    a, b, c = (mesh_pos[cells[:, k]] for k in range(3))
    area2 = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]  # [C] twice the signed area
    # Collinear boundary points can leave slivers of zero area; drop them and orient the rest CCW.
    keep = np.abs(area2) > 1e-6 * du * dv
    cells, area2 = cells[keep], area2[keep]
    cells[area2 < 0] = cells[area2 < 0][:, [0, 2, 1]]
    assert np.unique(cells).size == len(mesh_pos), "a node lost all its triangles"
    return mesh_pos, cells


def triangle_areas(pos: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Return the area `[C]` of each triangle of 2D positions `[N, 2]`, cells `[C, 3]`."""
    e1 = pos[cells[:, 1]] - pos[cells[:, 0]]  # [C, 2]
    e2 = pos[cells[:, 2]] - pos[cells[:, 0]]  # [C, 2]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


@dataclass(frozen=True)
class FlagModel:
    """The flag's elastic energy and lumped masses, built from its flat rest mesh.

    Stretching is a spring per mesh edge. Bending is a hinge energy per interior edge, linearised about the
    flat sheet as in Bergou et al. 2006 ("A Quadratic Bending Model for Inextensible Surfaces",
    https://doi.org/10.2312/SGP/SGP06/227-230): ``B/2 sum_e |e|^2 / (A_1 + A_2) |s_e(x)|^2``, where
    ``s_e(x)`` is the jump across edge ``e`` of the normal derivative of the piecewise-linear map from rest
    to world coordinates (for small folds, the dihedral angle) and ``A_1, A_2`` the areas of its triangles.
    ``s_e`` is linear in positions and zero on any rigidly moved flat sheet, so the bending Hessian is
    constant. Rolling the sheet into a cylinder of curvature k costs ``B/2 k^2`` per area (within ~10 %).

    Attributes:
        ends: `[E, 2]` node indices of each spring (the mesh edges).
        rest: `[E]` rest lengths.
        stiffness: `[E]` spring constants.
        bending: `[N, N]` sparse Hessian of the bending energy (the same for each coordinate).
        mass: `[N]` lumped node masses.
    """

    ends: np.ndarray
    rest: np.ndarray
    stiffness: np.ndarray
    bending: sp.csr_matrix
    mass: np.ndarray

    def energy(self, pos: np.ndarray) -> np.ndarray:
        """Return the elastic energy (stretch plus bending) of positions `[..., N, 3]` as `[...]`."""
        stretch = 0.5 * ((self._lengths(pos) - self.rest) ** 2 * self.stiffness).sum(-1)
        flat = np.moveaxis(pos, -2, 0).reshape(pos.shape[-2], -1)  # [N, ... * 3]
        bend = 0.5 * (flat * (self.bending @ flat)).sum(0).reshape(*pos.shape[:-2], 3).sum(-1)
        return stretch + bend

    def strain(self, pos: np.ndarray) -> np.ndarray:
        """Return each spring's strain ``length / rest - 1`` for positions `[..., N, 3]`, as `[..., E]`."""
        return self._lengths(pos) / self.rest - 1

    def _lengths(self, pos: np.ndarray) -> np.ndarray:
        """Return the spring lengths `[..., E]` of positions `[..., N, 3]`."""
        return np.linalg.norm(pos[..., self.ends[:, 0], :] - pos[..., self.ends[:, 1], :], axis=-1)


def flag_model(mesh_pos: np.ndarray, cells: np.ndarray, cfg: ClothConfig) -> FlagModel:
    """Build the springs, bending Hessian and masses of the flat mesh.

    Args:
        mesh_pos: `[N, 2]` rest coordinates (the sheet is at rest when flat).
        cells: `[C, 3]` triangles.
        cfg: supplies stiffness, bending and density.

    Returns:
        The model. A spring of rest length L whose triangles have total area A_t has stiffness
        ``cfg.stiffness * A_t / (3 L^2)``; masses are a third of each triangle's mass per corner.
    """
    num_nodes, num_cells = len(mesh_pos), len(cells)
    area = triangle_areas(mesh_pos, cells)  # [C]
    # Gradients of the three linear basis functions of every triangle, in rest coordinates.
    corner = mesh_pos[cells]  # [C, 3, 2]
    e1, e2 = corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0]  # [C, 2]
    det = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])[:, None]  # [C, 1]
    grad1 = np.stack([e2[:, 1], -e2[:, 0]], axis=1) / det  # [C, 2]
    grad2 = np.stack([-e1[:, 1], e1[:, 0]], axis=1) / det  # [C, 2]
    grad = np.stack([-grad1 - grad2, grad1, grad2], axis=1)  # [C, 3, 2]

    # Half-edge k of a triangle joins its corners k+1 and k+2; sort so that the two halves of an edge meet.
    start = np.roll(cells, -1, axis=1).reshape(-1)  # [3C]
    end = np.roll(cells, -2, axis=1).reshape(-1)  # [3C]
    owner = np.repeat(np.arange(num_cells), 3)  # [3C]
    lo, hi = np.minimum(start, end), np.maximum(start, end)
    order = np.lexsort((hi, lo))
    lo, hi, owner = lo[order], hi[order], owner[order]
    first = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])]  # [3C]
    edge_of = np.cumsum(first) - 1  # [3C]
    ends = np.stack([lo[first], hi[first]], axis=1)  # [E, 2]
    rest = np.linalg.norm(mesh_pos[ends[:, 0]] - mesh_pos[ends[:, 1]], axis=1)  # [E]
    edge_area = np.bincount(edge_of, weights=area[owner] / 3)  # [E] a third of each adjacent triangle

    # Interior edges: the jump from triangle t1 to t2 of the basis gradients along the edge normal n.
    twin = np.flatnonzero(~first)  # [I] second half of each interior edge
    t1, t2 = owner[twin - 1], owner[twin]  # [I]
    along = mesh_pos[hi[twin]] - mesh_pos[lo[twin]]  # [I, 2]
    length = np.linalg.norm(along, axis=1)  # [I]
    normal = np.stack([along[:, 1], -along[:, 0]], axis=1) / length[:, None]  # [I, 2]
    into_t2 = ((mesh_pos[cells[t2]].mean(1) - mesh_pos[lo[twin]]) * normal).sum(1) > 0  # [I]
    normal *= np.where(into_t2, 1.0, -1.0)[:, None]
    jump_t2 = (grad[t2] * normal[:, None]).sum(-1)  # [I, 3]
    jump_t1 = -(grad[t1] * normal[:, None]).sum(-1)  # [I, 3]
    coeff = np.concatenate([jump_t1, jump_t2], axis=1).ravel()  # [6I]
    nodes = np.concatenate([cells[t1], cells[t2]], axis=1).ravel()  # [6I]
    hinge = np.arange(len(twin)).repeat(6)  # [6I]
    jump = sp.csr_matrix((coeff, (hinge, nodes)), shape=(len(twin), num_nodes))  # [I, N] s_e(x) = jump @ x
    weight = length**2 / (area[t1] + area[t2])  # [I]
    bending = (cfg.bending * jump.T @ sp.diags(weight) @ jump).tocsr()  # [N, N]
    mass = cfg.density * np.bincount(cells.reshape(-1), weights=np.repeat(area / 3, 3), minlength=num_nodes)
    stiffness = cfg.stiffness * edge_area / rest**2  # [E]
    return FlagModel(ends=ends, rest=rest, stiffness=stiffness, bending=bending, mass=mass)


# ---------------------------------------------------------------------------------------------------------
# Wind


@dataclass(frozen=True)
class Wind:
    """A gusty wind: mean direction and speed varying in time plus a convected turbulent field.

    ``w(x, t) = U(t) d(t) + U0 * sum_m a_m e_m sin(k_m . (x - U0 d0 t) + phi_m)``, with
    ``U(t) = U0 (1 + gust * g(t))`` and ``d(t)`` horizontal at angle ``angle + wander * g'(t)``, where ``g``
    and ``g'`` are sums of sinusoids bounded by 1.
    """

    speed: float  # U0
    angle: float  # mean direction, radians from +x
    wander: float  # radians
    gust: float
    gust_freq: np.ndarray  # [2, G] angular frequencies of g (speed) and g' (direction)
    gust_phase: np.ndarray  # [2, G]
    gust_amp: np.ndarray  # [2, G], each row sums to 1
    wavevector: np.ndarray  # [M, 3]
    polarisation: np.ndarray  # [M, 3] turbulent velocity directions times amplitudes a_m
    phase: np.ndarray  # [M]

    @staticmethod
    def sample(cfg: ClothConfig, rng: np.random.Generator) -> Wind:
        """Draw one trajectory's wind from the ranges in ``cfg``."""
        period = rng.uniform(*cfg.gust_period, size=(2, _GUST_MODES))
        gust_amp = rng.uniform(0.2, 1.0, size=(2, _GUST_MODES))
        wavelength = rng.uniform(*cfg.turbulence_scale, size=_TURBULENCE_MODES)
        wave_dir = _unit(rng.normal(size=(_TURBULENCE_MODES, 3)))
        pol_amp = rng.uniform(0.2, 1.0, size=_TURBULENCE_MODES)
        turbulence_amp = rng.uniform(*cfg.turbulence) * pol_amp / pol_amp.sum()  # [M] the a_m
        return Wind(
            speed=rng.uniform(*cfg.wind_speed),
            angle=math.radians(rng.uniform(*cfg.wind_angle)),
            wander=math.radians(cfg.wind_wander),
            gust=rng.uniform(*cfg.gust),
            gust_freq=2 * np.pi / period,
            gust_phase=rng.uniform(0, 2 * np.pi, size=(2, _GUST_MODES)),
            gust_amp=gust_amp / gust_amp.sum(1, keepdims=True),
            wavevector=2 * np.pi / wavelength[:, None] * wave_dir,
            polarisation=_unit(rng.normal(size=(_TURBULENCE_MODES, 3))) * turbulence_amp[:, None],
            phase=rng.uniform(0, 2 * np.pi, size=_TURBULENCE_MODES),
        )

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Return the wind velocity `[P, 3]` at points `[P, 3]` and time ``t``."""
        g = (self.gust_amp * np.sin(self.gust_freq * t + self.gust_phase)).sum(1)  # [2]
        speed = self.speed * (1 + self.gust * g[0])
        angle = self.angle + self.wander * g[1]
        mean = speed * np.array([math.cos(angle), math.sin(angle), 0.0])  # [3]
        drift = self.speed * t * np.array([math.cos(self.angle), math.sin(self.angle), 0.0])  # [3]
        waves = np.sin((x - drift) @ self.wavevector.T + self.phase)  # [P, M]
        return mean + self.speed * waves @ self.polarisation  # [P, 3]


def _unit(v: np.ndarray) -> np.ndarray:
    """Return the vectors `[..., 3]` scaled to unit length."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def aerodynamic_force(
    x: np.ndarray, v: np.ndarray, cells: np.ndarray, wind: Wind, t: float, drag: float, friction: float
) -> np.ndarray:
    """Return the wind's force on each triangle: normal pressure plus tangential skin friction.

    With ``w`` the wind relative to the triangle, split into ``w_n n`` (along the unit normal) and ``w_t``,
    the force is ``area * (drag * |w_n| w_n n + friction * |w_t| w_t)``.

    Args:
        x: `[N, 3]` positions.
        v: `[N, 3]` velocities.
        cells: `[C, 3]` triangles.
        wind: the wind field, sampled at triangle centroids.
        t: time.
        drag: pressure coefficient ``rho_air * C_n / 2``.
        friction: skin-friction coefficient ``rho_air * C_f`` (both faces).

    Returns:
        `[C, 3]` forces.
    """
    tri = x[cells]  # [C, 3, 3]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [C, 3]
    area = 0.5 * np.linalg.norm(cross, axis=1, keepdims=True)  # [C, 1]
    normal = cross / np.maximum(2 * area, 1e-12)  # [C, 3]
    relative = wind(tri.mean(1), t) - v[cells].mean(1)  # [C, 3]
    w_n = (relative * normal).sum(1, keepdims=True)  # [C, 1]
    w_t = relative - w_n * normal  # [C, 3]
    speed_t = np.linalg.norm(w_t, axis=1, keepdims=True)  # [C, 1]
    return area * (drag * np.abs(w_n) * w_n * normal + friction * speed_t * w_t)  # [C, 3]


# ---------------------------------------------------------------------------------------------------------
# Time integration


class FlagSolver:
    """Implicit-Euler time stepping of a flag with pinned nodes, by projective dynamics.

    Each substep of length ``h`` minimises over the free nodes' positions ``x``
    ``|x - y|_M^2 / (2 h^2) + alpha |x - x_n|_M^2 / (2 h) + E(x)``, with ``alpha = cfg.damping``,
    ``y = x_n + h v_n + h^2 M^-1 f`` (``f`` gravity and wind at the start of the substep) and ``E`` the
    stretch plus bending energy. The local step projects every spring onto its rest length; the global step solves one linear system whose matrix
    ``M (1/h^2 + alpha/h) + K + Q`` (``K`` the spring Laplacian, ``Q`` the bending Hessian) is constant and
    factorised once. Every iteration lowers the substep's objective, which keeps the elastic part stable at
    any stiffness; iterations start from ``x_n + h v_n``, so a sheet in equilibrium stays exactly there.
    """

    def __init__(self, model: FlagModel, cells: np.ndarray, pinned: np.ndarray, cfg: ClothConfig):
        """Assemble and factorise the system matrix.

        Args:
            model: the flag's energy and masses.
            cells: `[C, 3]` triangles, for the wind force.
            pinned: `[N]` bool, nodes held in place.
            cfg: substep, iterations, damping, gravity, drag and friction.
        """
        num_nodes, num_springs, h = len(model.mass), len(model.rest), cfg.h
        self.model, self.cells, self.cfg = model, cells, cfg
        self.free = np.flatnonzero(~pinned)
        self.pinned = np.flatnonzero(pinned)
        signs = np.tile([1.0, -1.0], num_springs)  # [2E]
        spring = np.repeat(np.arange(num_springs), 2)  # [2E]
        self.incidence = sp.csr_matrix(
            (signs, (spring, model.ends.reshape(-1))), shape=(num_springs, num_nodes)
        )  # [E, N] spring vectors x_i - x_j
        self.pull = (self.incidence.T @ sp.diags(model.stiffness)).tocsr()  # [N, E]
        self.inertia = model.mass / h**2  # [N]
        self.damping = model.mass * cfg.damping / h  # [N]
        system = sp.diags(self.inertia + self.damping) + self.pull @ self.incidence + model.bending  # [N, N]
        system = system.tocsr()
        self.coupling = system[self.free][:, self.pinned]  # [F, P]
        # The matrix is symmetric positive definite: symmetric ordering, no pivoting, sparse factors.
        self.lu = splu(
            system[self.free][:, self.free].tocsc(),
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
        self.spread = sp.csr_matrix(
            (np.full(cells.size, 1 / 3), (cells.reshape(-1), np.repeat(np.arange(len(cells)), 3))),
            shape=(num_nodes, len(cells)),
        )  # [N, C] each triangle's force shared equally by its corners

    def step(self, x: np.ndarray, v: np.ndarray, t: float, wind: Wind) -> tuple[np.ndarray, np.ndarray]:
        """Advance positions and velocities `[N, 3]` by one substep from time ``t``; return the new pair."""
        cfg, h, mass = self.cfg, self.cfg.h, self.model.mass
        force = self.spread @ aerodynamic_force(x, v, self.cells, wind, t, cfg.drag, cfg.friction)  # [N, 3]
        force[:, 2] -= cfg.gravity * mass
        inertial = x + h * v + h**2 * force / mass[:, None]  # [N, 3]
        rhs = (self.inertia[:, None] * inertial + self.damping[:, None] * x)[self.free]  # [F, 3]
        rhs -= self.coupling @ x[self.pinned]
        new = x.copy()
        new[self.free] = (x + h * v)[self.free]
        for _ in range(cfg.iterations):
            # Local step: the nearest rest-length vector to each spring; global step: one linear solve.
            vec = self.incidence @ new  # [E, 3]
            length = np.sqrt(np.einsum("ij,ij->i", vec, vec))[:, None]  # [E, 1]
            target = vec * (self.model.rest[:, None] / np.maximum(length, 1e-12))  # [E, 3]
            new[self.free] = self.lu.solve(rhs + (self.pull @ target)[self.free])
        return new, (new - x) / h


# ---------------------------------------------------------------------------------------------------------
# Trajectories and data sets


def simulate_trajectory(seed: int, cfg: ClothConfig = ClothConfig()) -> dict[str, np.ndarray]:
    """Draw a flag and a wind from ``seed`` and simulate them; the same seed and config give identical arrays.

    Args:
        seed: selects the flag's size and mesh, the wind and the initial ripple.
        cfg: the data set's configuration.

    Returns:
        The trajectory, as ``simulate_flag`` returns it.
    """
    rng = np.random.default_rng(seed)
    width = rng.uniform(*cfg.width)
    height = rng.uniform(*cfg.height)
    num_nodes = int(rng.integers(cfg.num_nodes[0], cfg.num_nodes[1] + 1))
    mesh_pos, cells = flag_mesh(width, height, num_nodes, cfg.jitter, rng)
    wind = Wind.sample(cfg, rng)
    ripple = cfg.ripple * rng.standard_normal(len(mesh_pos))  # [N]
    return simulate_flag(mesh_pos, cells, wind, cfg, ripple)


def simulate_flag(
    mesh_pos: np.ndarray, cells: np.ndarray, wind: Wind, cfg: ClothConfig, ripple: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Simulate a flag hung from the pole ``u = 0``, starting at rest in the plane ``y = 0``.

    Args:
        mesh_pos: `[N, 2]` rest coordinates ``(u, v)``; node ``(u, v)`` starts at world ``(u, ripple, v)``.
        cells: `[C, 3]` triangles.
        wind: the wind field.
        cfg: time stepping and material.
        ripple: `[N]` initial out-of-plane offsets (ignored on the pole); None starts exactly flat.

    Returns:
        ``mesh_pos`` `[N, 2]` float32, ``world_pos`` `[T, N, 3]` float32 (``cfg.num_steps`` frames ``cfg.dt``
        apart, frame 0 the state after ``cfg.warmup`` seconds), ``cells`` `[C, 3]` int32, ``node_type`` `[N]` int32 (HANDLE on the
        pole, NORMAL elsewhere), ``wind`` `[T, N, 3]` float32 (the wind velocity at each node at each frame's
        time, the forcing of the next step), as ``CLOTH_SCHEMA`` describes.

    Raises:
        FloatingPointError: if the simulation produced NaN or inf.
    """
    if mesh_pos.ndim != 2 or mesh_pos.shape[1] != 2 or cells.ndim != 2 or cells.shape[1] != 3:
        raise ValueError(f"expected mesh_pos [N, 2] and cells [C, 3], got {mesh_pos.shape} and {cells.shape}")
    pinned = np.isclose(mesh_pos[:, 0], 0.0)  # [N]
    if not pinned.any():
        raise ValueError("mesh_pos: expected nodes on the pole u = 0 to pin the flag, found none")
    solver = FlagSolver(flag_model(mesh_pos, cells, cfg), cells, pinned, cfg)
    offset = np.zeros(len(mesh_pos)) if ripple is None else np.where(pinned, 0.0, ripple)  # [N]
    x = np.stack([mesh_pos[:, 0], offset, mesh_pos[:, 1]], axis=1)  # [N, 3]
    v = np.zeros_like(x)  # [N, 3]
    skip = round(cfg.warmup / cfg.dt)  # frames simulated but not stored
    world_pos = np.empty((cfg.num_steps, *x.shape), np.float32)  # [T, N, 3]
    wind_at_nodes = np.empty_like(world_pos)  # [T, N, 3]
    for frame in range(skip + cfg.num_steps):
        if frame:
            for sub in range(cfg.substeps):
                x, v = solver.step(x, v, ((frame - 1) * cfg.substeps + sub) * cfg.h, wind)
        if frame >= skip:
            world_pos[frame - skip] = x
            wind_at_nodes[frame - skip] = wind(x, frame * cfg.dt)
    if not np.isfinite(world_pos).all():
        raise FloatingPointError("flag simulation diverged: raise ClothConfig.substeps or lower the wind")
    return {
        "mesh_pos": mesh_pos.astype(np.float32),
        "world_pos": world_pos,
        "cells": cells.astype(np.int32),
        "node_type": np.where(pinned, NodeType.HANDLE, NodeType.NORMAL).astype(np.int32),
        "wind": wind_at_nodes,
    }


def split_seeds(seed: int, split: str, n: int) -> list[int]:
    """Return the ``n`` trajectory seeds of split ``split`` of the data set made with ``seed``."""
    split_seed = np.random.SeedSequence([seed, zlib.crc32(split.encode())]).generate_state(1)[0]
    return trajectory_seeds(int(split_seed), n)


def generate(
    out_dir: str | os.PathLike,
    cfg: ClothConfig = ClothConfig(),
    splits: dict[str, int] | None = None,
    seed: int = 0,
    workers: int = 1,
) -> dict[str, Path]:
    """Write one flag data set, ``out_dir/{split}.h5`` per split, with the full config in each header.

    Trajectory ``i`` of split ``name`` is ``simulate_trajectory(split_seeds(seed, name, n)[i], cfg)``, so a
    split does not depend on the other splits or on their order.

    Args:
        out_dir: destination folder.
        cfg: the data set's configuration.
        splits: number of trajectories per split name (default: train 1000, valid 100, test 100).
        seed: the data set's seed.
        workers: processes to simulate in.

    Returns:
        Split name -> path written.
    """
    splits = {"train": 1000, "valid": 100, "test": 100} if splits is None else splits
    for name, n in splits.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"splits[{name!r}]: expected an integer >= 0 trajectories, got {n!r}")
    simulate = functools.partial(simulate_trajectory, cfg=cfg)
    return {
        name: generate_split(
            Path(out_dir) / f"{name}.h5",
            simulate,
            split_seeds(seed, name, n),
            schema=CLOTH_SCHEMA,
            dt=cfg.dt,
            generator=GENERATOR,
            config={**dataclasses.asdict(cfg), "seed": seed, "split": name},
            workers=workers,
            desc=f"cloth {name}",
        )
        for name, n in splits.items()
    }
