import pytest
import torch

from gnnsim.graph import NodeType, cells_to_edges


def test_triangle_edges_are_unique_and_two_way():
    # Two triangles sharing edge (1, 2).
    edges = cells_to_edges(torch.tensor([[0, 1, 2], [1, 3, 2]]))
    pairs = set(map(tuple, edges.T.tolist()))
    undirected = {(0, 1), (1, 2), (0, 2), (1, 3), (2, 3)}
    assert pairs == undirected | {(b, a) for a, b in undirected}
    assert edges.shape == (2, 10)  # no duplicates of the shared edge


def test_edges_sorted_by_sender_then_receiver():
    edges = cells_to_edges(torch.tensor([[2, 0, 1], [1, 3, 2]]))
    key = edges[0] * 10 + edges[1]
    assert torch.equal(key, key.sort().values)


def test_quad_edges_follow_the_cycle_not_diagonals():
    edges = cells_to_edges(torch.tensor([[0, 1, 2, 3]]))
    pairs = set(map(tuple, edges.T.tolist()))
    assert (0, 2) not in pairs and (1, 3) not in pairs
    assert len(pairs) == 8


def test_degenerate_cells_give_no_self_loops():
    edges = cells_to_edges(torch.tensor([[0, 0, 1]]))
    assert set(map(tuple, edges.T.tolist())) == {(0, 1), (1, 0)}


def test_bad_cells_shape_names_expected_shape():
    with pytest.raises(ValueError, match=r"expected shape \[C, 3\] or \[C, 4\]"):
        cells_to_edges(torch.zeros(4, 2, dtype=torch.long))


def test_node_type_values_match_deepmind():
    assert [NodeType.NORMAL, NodeType.OBSTACLE, NodeType.AIRFOIL, NodeType.HANDLE, NodeType.INFLOW,
            NodeType.OUTFLOW, NodeType.WALL_BOUNDARY, NodeType.SIZE] == [0, 1, 2, 3, 4, 5, 6, 9]
