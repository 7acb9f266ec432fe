"""GRU4Rec losses on an M x (M + n_sample) score matrix whose positives sit on the diagonal.

Columns are the mini-batch's targets (the in-batch negatives of the other rows) followed by the
shared extra samples. Accidental hits are not masked. Each function returns the per-row losses;
the trainer sums them and divides by the fixed batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-24
LOG_EPS = math.log(EPS)


_MASKS: dict[tuple[int, int, str], torch.Tensor] = {}


def _diag_mask(m: int, n: int, device: torch.device) -> torch.Tensor:
    """The boolean m x n mask of the target diagonal (cached: shapes repeat every step)."""
    key = (m, n, str(device))
    mask = _MASKS.get(key)
    if mask is None:
        if len(_MASKS) > 256:
            _MASKS.clear()
        mask = _MASKS[key] = torch.eye(m, n, dtype=torch.bool, device=device)
    return mask


def cross_entropy(scores: torch.Tensor, logq_shift: torch.Tensor | None = None) -> torch.Tensor:
    """-log(softmax(r)_i + 1e-24), max-stabilized; `logq_shift` is subtracted per column first.

    Computed as -logaddexp(log softmax_i, log 1e-24): the same value as the formula, without
    forming the softmax matrix.
    """
    if logq_shift is not None:
        scores = scores - logq_shift
    log_p = scores.diagonal() - torch.logsumexp(scores, dim=1)
    return -torch.logaddexp(log_p, torch.full_like(log_p, LOG_EPS))


def _negative_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's negatives (the target column gets weight 0)."""
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=1)


def bpr_max(scores: torch.Tensor, bpreg: float) -> torch.Tensor:
    """-log(sum_j s_j sigmoid(r_i - r_j) + 1e-24) + bpreg * sum_j s_j r_j^2 (s over negatives)."""
    m, n = scores.shape
    mask = _diag_mask(m, n, scores.device)
    s = _negative_softmax(scores, mask)
    target = scores.diagonal().unsqueeze(1)
    loss = -torch.log((s * torch.sigmoid(target - scores)).sum(dim=1) + EPS)
    if bpreg:
        loss = loss + bpreg * (s * scores.square()).sum(dim=1)
    return loss


def top1_max(scores: torch.Tensor) -> torch.Tensor:
    """sum_j s_j (sigmoid(r_j - r_i) + sigmoid(r_j^2)), s = softmax over the negatives."""
    m, n = scores.shape
    s = _negative_softmax(scores, _diag_mask(m, n, scores.device))
    target = scores.diagonal().unsqueeze(1)
    return (s * (torch.sigmoid(scores - target) + torch.sigmoid(scores.square()))).sum(dim=1)


def top1(scores: torch.Tensor) -> torch.Tensor:
    """Legacy TOP1 (2016): mean over negatives of sigmoid(r_j - r_i) + sigmoid(r_j^2)."""
    m, n = scores.shape
    neg = (~_diag_mask(m, n, scores.device)).to(scores.dtype)
    target = scores.diagonal().unsqueeze(1)
    terms = torch.sigmoid(scores - target) + torch.sigmoid(scores.square())
    return (terms * neg).sum(dim=1) / (n - 1)


def bpr(scores: torch.Tensor) -> torch.Tensor:
    """Legacy BPR (2016): mean over negatives of -log sigmoid(r_i - r_j)."""
    m, n = scores.shape
    neg = (~_diag_mask(m, n, scores.device)).to(scores.dtype)
    target = scores.diagonal().unsqueeze(1)
    return (-F.logsigmoid(target - scores) * neg).sum(dim=1) / (n - 1)


def bpr_max_and_grad(
    scores: torch.Tensor, elu_param: float, bpreg: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPR-max (after the ELU final activation): `scale` * summed loss and its gradient w.r.t.
    the raw scores, derived by hand. With s the softmax over negatives, sg = sigmoid(r_i - r_j),
    P = sum_j s_j sg_j, A = 1 / (P + 1e-24) and R2 = sum_j s_j r_j^2:
      d/dr_j (j != i) = s_j * (A * (P - sg_j^2) + bpreg * (r_j^2 + 2 r_j - R2))
      d/dr_i          = -A * (P - sum_j s_j sg_j^2)
    and through ELU: * 1 where the raw score > 0, else * (r + elu_param).
    """
    m, n = scores.shape
    mask = _diag_mask(m, n, scores.device)
    r = F.elu(scores, alpha=elu_param) if elu_param > 0 else scores
    s = _negative_softmax(r, mask)
    target = r.diagonal().unsqueeze(1)
    sg = torch.sigmoid(target - r)
    s_sg = s * sg
    p = s_sg.sum(dim=1, keepdim=True)
    a = 1.0 / (p + EPS)
    sg2 = s_sg * sg  # s * sg^2
    r2 = r * r
    loss_rows = -torch.log(p + EPS).view(-1)
    grad = (p - sg * sg).mul_(a)
    if bpreg:
        s_r2 = (s * r2).sum(dim=1, keepdim=True)
        loss_rows = loss_rows + bpreg * s_r2.view(-1)
        grad.add_((r2 + 2 * r - s_r2).mul_(bpreg))
    grad.mul_(s)
    grad.diagonal().copy_((-(p - sg2.sum(dim=1, keepdim=True)) * a).view(-1))
    if elu_param > 0:
        grad = torch.where(scores > 0, grad, grad * (r + elu_param))
    return loss_rows.sum() * scale, grad.mul_(scale)


def final_activation(scores: torch.Tensor, elu_param: float) -> torch.Tensor:
    """ELU with parameter `elu_param` for the ranking losses; 0 means linear."""
    return F.elu(scores, alpha=elu_param) if elu_param > 0 else scores


def compute(
    loss: str,
    scores: torch.Tensor,
    *,
    elu_param: float = 0.0,
    bpreg: float = 0.0,
    logq_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row losses of `loss` (a name from config.LOSSES)."""
    if loss == "cross-entropy":
        return cross_entropy(scores, logq_shift)
    scores = final_activation(scores, elu_param)
    if loss == "bpr-max":
        return bpr_max(scores, bpreg)
    if loss == "top1-max":
        return top1_max(scores)
    if loss == "top1":
        return top1(scores)
    if loss == "bpr":
        return bpr(scores)
    raise ValueError(f"unknown loss {loss!r}")
