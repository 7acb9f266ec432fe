"""The optimizer step equals the written formula, rows and duplicates included (numpy oracle)."""

import numpy as np
import torch

from gru4rec.optim import AdagradM


def adagrad_m(p, acc, v, g, lr, mom):
    acc = acc + g * g
    step = g / np.sqrt(acc + 1e-6)
    if mom > 0:
        v = mom * v - lr * step
        return p + v, acc, v
    return p - lr * step, acc, v


def test_dense_step_two_iterations_with_momentum():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4)).astype(np.float64)
    g1, g2 = rng.normal(size=(2, 3, 4))
    opt = AdagradM(lr=0.1, momentum=0.4)
    p = torch.tensor(p0)
    for g in (g1, g2):
        opt.dense_step("w", p, torch.tensor(g))
    e, acc, v = adagrad_m(p0, 0 * p0, 0 * p0, g1, 0.1, 0.4)
    e, acc, v = adagrad_m(e, acc, v, g2, 0.1, 0.4)
    np.testing.assert_allclose(p.numpy(), e, rtol=1e-12)


def test_sparse_step_sums_duplicates_and_leaves_untouched_rows():
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(6, 2))
    opt = AdagradM(lr=0.05, momentum=0.3)
    p = torch.tensor(p0)
    acc = np.zeros_like(p0)
    v = np.zeros_like(p0)
    expected = p0.copy()
    for rows in ([1, 3, 1, 4], [3, 3, 0]):
        g = rng.normal(size=(len(rows), 2))
        opt.sparse_step("W", p, torch.tensor(rows), torch.tensor(g))
        summed = np.zeros_like(p0)
        np.add.at(summed, rows, g)
        for r in sorted(set(rows)):
            expected[r], acc[r], v[r] = adagrad_m(expected[r], acc[r], v[r], summed[r], 0.05, 0.3)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    state_acc, state_v = opt.state["W"]
    np.testing.assert_allclose(state_acc.numpy(), acc, rtol=1e-12)
    np.testing.assert_allclose(state_v.numpy(), v, rtol=1e-12)
    # rows 2 and 5 were never touched: parameter, acc and v unchanged
    np.testing.assert_array_equal(p.numpy()[[2, 5]], p0[[2, 5]])
    assert not state_acc.numpy()[[2, 5]].any() and not state_v.numpy()[[2, 5]].any()


def test_sparse_step_without_momentum():
    p0 = np.array([[1.0], [2.0]])
    p = torch.tensor(p0)
    opt = AdagradM(lr=0.5, momentum=0.0)
    opt.sparse_step("W", p, torch.tensor([0, 0]), torch.tensor([[0.3], [0.1]], dtype=torch.float64))
    g = 0.4
    assert p[0, 0].item() == 1.0 - 0.5 * g / np.sqrt(g * g + 1e-6)
    assert p[1, 0].item() == 2.0
