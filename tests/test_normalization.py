import numpy as np
import pytest
import torch

from gnnsim.normalization import Normalizer


def test_statistics_match_numpy_over_all_rows():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 2)) for n in (5, 7, 11)]
    norm = Normalizer(2).train()
    for b in batches:
        norm(torch.tensor(b))
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.std.numpy(), data.std(0), rtol=1e-10)


def test_inverse_recovers_input():
    x = torch.randn(50, 3, dtype=torch.float64) * 4 + 1
    norm = Normalizer(3).train()
    y = norm(x)
    torch.testing.assert_close(norm.inverse(y), x, rtol=1e-12, atol=1e-12)
    assert abs(y.mean().item()) < 1e-12  # first batch: normalised by its own stats


def test_accumulation_stops_at_cap():
    norm = Normalizer(1, max_accumulations=2).train()
    norm(torch.tensor([[1.0], [3.0]]))
    norm(torch.tensor([[5.0]]))
    norm(torch.tensor([[1000.0]]))  # ignored: cap reached
    assert norm.num_accumulations.item() == 2
    assert norm.mean.item() == pytest.approx(3.0)


def test_eval_mode_is_frozen_and_deterministic():
    norm = Normalizer(2).train()
    norm(torch.randn(10, 2))
    norm.eval()
    before = norm.state_dict()["sum"].clone()
    x = torch.randn(4, 2)
    torch.testing.assert_close(norm(x), norm(x))
    assert torch.equal(norm.state_dict()["sum"], before)


def test_std_floor_for_constant_features():
    norm = Normalizer(1, std_epsilon=1e-8).train()
    y = norm(torch.full((5, 1), 2.0))
    assert norm.std.item() == 1e-8 and torch.all(y == 0)


def test_wrong_feature_size_is_rejected():
    with pytest.raises(ValueError, match="expected last dim 2"):
        Normalizer(2)(torch.zeros(3, 4))
