"""Adagrad with classical momentum, dense and sparse-row (GRU4Rec's optimizer).

    acc += g^2;  step = g / sqrt(acc + 1e-6);  v = momentum * v - lr * step;  p += v
    (without momentum: p -= lr * step)

acc and v start at zero; no clipping, no decay. For item-indexed parameters only the rows
touched in the mini-batch change: gradients of duplicate indices are summed first, and
untouched rows keep their parameter, acc and v unchanged.
"""

from __future__ import annotations

import torch

EPS = 1e-6


class AdagradM:
    def __init__(self, lr: float, momentum: float) -> None:
        self.lr = lr
        self.momentum = momentum
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _state(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name not in self.state:
            acc = torch.zeros_like(like)
            vel = torch.zeros_like(like) if self.momentum > 0 else None
            self.state[name] = (acc, vel)
        return self.state[name]

    @torch.no_grad()
    def dense_step(self, name: str, param: torch.Tensor, grad: torch.Tensor) -> None:
        acc, vel = self._state(name, param)
        acc.addcmul_(grad, grad)
        step = grad / (acc + EPS).sqrt_()
        if vel is None:
            param.add_(step, alpha=-self.lr)
        else:
            vel.mul_(self.momentum).add_(step, alpha=-self.lr)
            param.add_(vel)

    @torch.no_grad()
    def sparse_step(
        self,
        name: str,
        param: torch.Tensor,
        rows: torch.Tensor,
        grad: torch.Tensor,
        last_col_touched: torch.Tensor | None = None,
    ) -> None:
        """Update rows `rows` of `param` (n x d) with per-occurrence gradients `grad` (len x d).

        `last_col_touched` (bool per occurrence) is for a table whose last column is a separate
        parameter (the output bias beside Wy): a row's last column counts as touched only if
        one of its occurrences says so; untouched, it keeps its value, acc and velocity.
        """
        acc, vel = self._state(name, param)
        uniq, inverse = torch.unique(rows, return_inverse=True)
        g = torch.zeros(len(uniq), grad.shape[1], dtype=grad.dtype, device=grad.device)
        g.index_add_(0, inverse, grad)
        a = acc.index_select(0, uniq).addcmul_(g, g)
        acc.index_copy_(0, uniq, a)  # untouched last columns: g = 0, acc unchanged
        step = g.div_(a.add_(EPS).sqrt_())
        if vel is None:
            param.index_add_(0, uniq, step, alpha=-self.lr)  # g = 0 gives a zero step
            return
        v_old = vel.index_select(0, uniq)
        v = v_old * self.momentum - self.lr * step
        if last_col_touched is not None:
            touched = torch.zeros(len(uniq), dtype=grad.dtype, device=grad.device)
            touched.index_add_(0, inverse, last_col_touched.to(grad.dtype))
            touched = touched > 0
            v[:, -1] = torch.where(touched, v[:, -1], v_old[:, -1])
            vel.index_copy_(0, uniq, v)
            v[:, -1].mul_(touched)
        else:
            vel.index_copy_(0, uniq, v)
        param.index_add_(0, uniq, v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (acc, vel) in self.state.items():
            out[f"{name}.acc"] = acc.detach().cpu().clone()
            if vel is not None:
                out[f"{name}.vel"] = vel.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        names = {k.rsplit(".", 1)[0] for k in state}
        self.state = {}
        for name in names:
            acc = state[f"{name}.acc"].to(device)
            vel = state.get(f"{name}.vel")
            if self.momentum > 0:
                vel = torch.zeros_like(acc) if vel is None else vel.to(device)
            else:
                vel = None
            self.state[name] = (acc, vel)
