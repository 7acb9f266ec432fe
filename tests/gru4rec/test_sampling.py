import numpy as np
import pytest
import torch

from gru4rec.sampling import SampleStore, sampling_weights


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_frequencies_follow_support_to_the_alpha(alpha):
    support = np.array([1000, 300, 100, 30, 10, 3, 1])
    gen = torch.Generator().manual_seed(1)
    store = SampleStore(sampling_weights(support, alpha), 1000, 400_000, torch.device("cpu"), gen)
    draws = torch.cat([store.next() for _ in range(400)]).numpy()
    freq = np.bincount(draws, minlength=len(support)) / len(draws)
    expected = support**alpha / (support**alpha).sum()
    # within 5 standard errors of a multinomial share
    se = np.sqrt(expected * (1 - expected) / len(draws))
    assert np.all(np.abs(freq - expected) <= 5 * se + 1e-12), (freq, expected)


def test_one_row_per_batch_and_redraw_when_used_up():
    gen = torch.Generator().manual_seed(3)
    store = SampleStore(
        sampling_weights(np.array([5, 4, 3, 2, 1]), 0.5), 8, 8 * 3, torch.device("cpu"), gen
    )
    rows = [store.next() for _ in range(3)]
    assert all(r.shape == (8,) for r in rows)
    assert store.draws == 1  # three rows from one pre-drawn store
    store.next()
    assert store.draws == 2  # used up: redrawn
    assert store.rows == 3
