"""Unstructured triangle meshes of a channel with an optional circular hole, made by gmsh."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Channel:
    """A channel [0, length] x [0, height], with a cylinder of `radius` at `center` when radius > 0."""

    length: float
    height: float
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0

    def check(self) -> None:
        """Raise a one-line ValueError when the cylinder does not lie strictly inside the channel."""
        if self.length <= 0 or self.height <= 0:
            raise ValueError(
                f"channel: expected positive length and height, got {self.length}, {self.height}"
            )
        if self.radius < 0:
            raise ValueError(f"radius: expected >= 0, got {self.radius}")
        if self.radius == 0:
            return
        for axis, c, extent in (("x", self.center[0], self.length), ("y", self.center[1], self.height)):
            lo, hi = c - self.radius, c + self.radius
            if not (0 < lo and hi < extent):
                raise ValueError(
                    f"center {axis}: expected the cylinder [{lo:g}, {hi:g}] inside (0, {extent:g})"
                )


def mesh_channel(
    channel: Channel, size: float, cylinder_size: float, refine_distance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the channel (minus the cylinder) with triangles, graded from `cylinder_size` to `size`.

    The element size is `cylinder_size` on the cylinder and grows linearly to `size` at `refine_distance`
    (default: ten cylinder radii) from it. Meshing is single-threaded and deterministic.

    Args:
        channel: the geometry (checked first).
        size: far-field element size.
        cylinder_size: element size on the cylinder (ignored without a cylinder).
        refine_distance: distance from the cylinder over which the size grows to `size`.

    Returns:
        mesh_pos: `[N, 2]` float64 node positions; boundary nodes lie exactly on the straight walls.
        cells: `[C, 3]` int64 counter-clockwise triangles; every node belongs to a triangle.
    """
    import gmsh

    channel.check()
    if not (0 < size and 0 < cylinder_size):
        raise ValueError(
            f"mesh size: expected positive sizes, got size={size}, cylinder_size={cylinder_size}"
        )
    owner = not gmsh.isInitialized()
    if owner:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.model.add("channel")
        geo = gmsh.model.geo
        length, height = channel.length, channel.height
        corners = [
            geo.addPoint(x, y, 0.0, size) for x, y in ((0, 0), (length, 0), (length, height), (0, height))
        ]
        walls = [geo.addLine(corners[i], corners[(i + 1) % 4]) for i in range(4)]
        loops = [geo.addCurveLoop(walls)]
        arcs = []
        if channel.radius > 0:
            cx, cy = channel.center
            centre = geo.addPoint(cx, cy, 0.0, cylinder_size)
            rim = [
                geo.addPoint(
                    cx + channel.radius * math.cos(a), cy + channel.radius * math.sin(a), 0.0, cylinder_size
                )
                for a in np.arange(4) * (math.pi / 2)
            ]
            arcs = [geo.addCircleArc(rim[i], centre, rim[(i + 1) % 4]) for i in range(4)]
            loops.append(geo.addCurveLoop(arcs))
        geo.addPlaneSurface(loops)
        geo.synchronize()
        if arcs:
            mesh = gmsh.model.mesh
            distance = mesh.field.add("Distance")
            mesh.field.setNumbers(distance, "CurvesList", arcs)
            mesh.field.setNumber(distance, "Sampling", 200)
            grade = mesh.field.add("Threshold")
            mesh.field.setNumber(grade, "InField", distance)
            mesh.field.setNumber(grade, "SizeMin", cylinder_size)
            mesh.field.setNumber(grade, "SizeMax", size)
            mesh.field.setNumber(grade, "DistMin", 0.0)
            mesh.field.setNumber(grade, "DistMax", refine_distance or 10 * channel.radius)
            mesh.field.setAsBackgroundMesh(grade)
            gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
            gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.model.mesh.generate(2)
        tags, coords, _ = gmsh.model.mesh.getNodes()
        _, _, elem_nodes = gmsh.model.mesh.getElements(2)
    finally:
        gmsh.model.remove()
        if owner:
            gmsh.finalize()
    if len(elem_nodes) != 1:
        raise RuntimeError(f"gmsh: expected one triangle block, got {len(elem_nodes)}")
    # Renumber gmsh tags to 0..N-1, keeping only nodes used by triangles (drops the circle's centre point).
    index = np.full(int(tags.max()) + 1, -1, dtype=np.int64)
    index[tags.astype(np.int64)] = np.arange(len(tags))
    cells = index[elem_nodes[0].astype(np.int64).reshape(-1, 3)]  # [C, 3]
    pos = coords.reshape(-1, 3)[:, :2]  # [N_gmsh, 2]
    used = np.unique(cells)
    renumber = np.full(len(tags), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    cells, pos = renumber[cells], pos[used]
    # Orient every triangle counter-clockwise.
    d1, d2 = pos[cells[:, 1]] - pos[cells[:, 0]], pos[cells[:, 2]] - pos[cells[:, 0]]
    clockwise = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] < 0
    cells[clockwise] = cells[clockwise][:, [0, 2, 1]]
    return np.ascontiguousarray(pos), cells
