"""Loss values against hand-computed small matrices (plain Python math, not the code)."""

import math

import pytest
import torch

from gru4rec import losses

R = [[2.0, 0.5, -1.0, 0.3], [0.1, 1.5, 0.7, -0.4]]  # 2 rows; targets on the diagonal


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_cross_entropy_with_logq():
    shift = [0.4, 1.1, 0.25, 0.9]  # logq * log(support) per column
    got = losses.cross_entropy(torch.tensor(R), torch.tensor(shift))
    for i, row in enumerate(R):
        z = [r - s for r, s in zip(row, shift, strict=True)]
        p = math.exp(z[i]) / sum(math.exp(v) for v in z)
        assert got[i].item() == pytest.approx(-math.log(p + 1e-24), rel=1e-6)


def test_cross_entropy_is_max_stabilized():
    big = torch.tensor([[1000.0, 999.0], [5.0, 1005.0]])
    got = losses.cross_entropy(big)
    assert torch.isfinite(got).all()
    assert got[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-4)
    # a hopeless row saturates at -log(1e-24) instead of inf
    worst = losses.cross_entropy(torch.tensor([[-1000.0, 1000.0]]))
    assert worst[0].item() == pytest.approx(-math.log(1e-24), rel=1e-6)


def neg_softmax(row, i):
    e = [math.exp(v) if j != i else 0.0 for j, v in enumerate(row)]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("bpreg", [0.0, 1.95])
def test_bpr_max_masks_the_target_and_adds_bpreg(bpreg):
    got = losses.bpr_max(torch.tensor(R), bpreg)
    for i, row in enumerate(R):
        s = neg_softmax(row, i)
        inner = sum(s[j] * sig(row[i] - row[j]) for j in range(4))
        reg = sum(s[j] * row[j] ** 2 for j in range(4))
        expected = -math.log(inner + 1e-24) + bpreg * reg
        assert got[i].item() == pytest.approx(expected, rel=1e-6)


def test_bpr_max_with_elu_final_activation():
    got = losses.compute("bpr-max", torch.tensor(R), elu_param=0.5, bpreg=1.0)
    for i, row in enumerate(R):
        a = [v if v > 0 else 0.5 * (math.exp(v) - 1) for v in row]
        s = neg_softmax(a, i)
        inner = sum(s[j] * sig(a[i] - a[j]) for j in range(4))
        expected = -math.log(inner + 1e-24) + sum(s[j] * a[j] ** 2 for j in range(4))
        assert got[i].item() == pytest.approx(expected, rel=1e-6)


def test_top1_max():
    got = losses.top1_max(torch.tensor(R))
    for i, row in enumerate(R):
        s = neg_softmax(row, i)
        expected = sum(s[j] * (sig(row[j] - row[i]) + sig(row[j] ** 2)) for j in range(4))
        assert got[i].item() == pytest.approx(expected, rel=1e-6)


def test_legacy_top1_and_bpr_average_over_negatives():
    t1 = losses.top1(torch.tensor(R))
    b = losses.bpr(torch.tensor(R))
    for i, row in enumerate(R):
        negs = [j for j in range(4) if j != i]
        e_t1 = sum(sig(row[j] - row[i]) + sig(row[j] ** 2) for j in negs) / 3
        e_b = sum(-math.log(sig(row[i] - row[j])) for j in negs) / 3
        assert t1[i].item() == pytest.approx(e_t1, rel=1e-6)
        assert b[i].item() == pytest.approx(e_b, rel=1e-6)


def test_softmax_is_not_applied_twice():
    # cross-entropy of logits r equals -log softmax(r)_i: feeding softmax outputs would differ
    r = torch.tensor([[3.0, 1.0, 0.0]])
    assert losses.compute("cross-entropy", r)[0].item() == pytest.approx(
        -math.log(math.exp(3) / (math.exp(3) + math.exp(1) + 1)), rel=1e-6
    )
