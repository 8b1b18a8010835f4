"""Maze motion and exact shortest-path distances on hand-checkable layouts."""

import math

import numpy as np
import pytest

from gnnsim.planning.geodesic import Geodesic
from gnnsim.planning.maze import Maze, four_rooms_layout, serpentine_layout, u_layout

# A 3 x 3 free area with a wall tongue in the middle column: (1.5, 1.5) -> (3.5, 1.5) must go over it.
TONGUE = """
#####
#...#
#.#.#
#.#.#
#####
"""


def test_distance_around_a_wall_tongue():
    geo = Geodesic(Maze.from_text(TONGUE))
    a = np.array([[1.5, 1.5], [1.5, 1.5], [1.2, 3.8]])
    b = np.array([[3.5, 1.5], [1.5, 3.5], [3.8, 3.8]])
    # Over the corners (2, 3) and (3, 3): two legs of sqrt(0.5^2 + 1.5^2) plus the 1-cell top of the tongue.
    expected = [2 * math.sqrt(0.25 + 2.25) + 1.0, 2.0, 2.6]
    np.testing.assert_allclose(geo.pairs(a, b), expected, atol=1e-9)
    np.testing.assert_allclose(np.diag(geo.matrix(a, b)), expected, atol=1e-9)
    np.testing.assert_allclose(geo.matrix(a, b), geo.matrix(b, a).T, atol=1e-9)


def test_serpentine_end_to_end_distance():
    # Corridors y in [1, 2) and [3, 4) joined through the cell x in [6, 7): the path bends at the wall
    # corners (6, 3) and (6, 2).
    maze = Maze.from_text(serpentine_layout(corridors=2, length=6, width=1))
    geo = Geodesic(maze)
    start, goal = np.array([[1.5, 3.5]]), np.array([[1.5, 1.5]])
    expected = 2 * math.hypot(4.5, 0.5) + 1.0
    np.testing.assert_allclose(geo.pairs(start, goal), [expected], atol=1e-9)


def test_step_slides_along_walls_and_never_enters_them():
    maze = Maze.from_text(TONGUE, max_step=0.5)
    # Pushing right-and-up against the tongue's left face: x stops at the face, y still moves.
    nxt = maze.step(np.array([[1.8, 1.5]]), np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(nxt, [[2.0, 2.0]], atol=1e-5)
    assert nxt[0, 0] < 2.0
    rng = np.random.default_rng(0)
    for layout in (serpentine_layout(3, 6, 1), u_layout(5, 2), four_rooms_layout(4, 1)):
        big = Maze.from_text(layout, max_step=1.7)  # several substeps per step
        x = big.sample_free(500, rng)
        for _ in range(50):
            x = big.step(x, rng.uniform(-1.5, 1.5, size=x.shape))
            assert big.is_free(x).all()


def test_layout_errors_are_one_line():
    with pytest.raises(ValueError, match="border"):
        Maze.from_text("###\n#..\n###")
    with pytest.raises(ValueError, match="not connected"):
        Maze.from_text("#####\n#.#.#\n#####")
    with pytest.raises(ValueError, match="pinch"):
        Maze.from_text("#####\n#.#.#\n##..#\n#...#\n#####")
    with pytest.raises(ValueError, match="walls"):
        Geodesic(Maze.from_text(TONGUE)).pairs(np.array([[2.5, 1.5]]), np.array([[1.5, 1.5]]))
