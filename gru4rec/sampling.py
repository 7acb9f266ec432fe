"""Extra negative samples: drawn on the training device from a pre-drawn store.

Items are drawn with probability proportional to their sampling weight (support^alpha: alpha
0 uniform, 1 popularity; in the pipeline, the published popularity table's `weight`) by
inverse-CDF search over uniform draws. The store holds `store_size // n_sample`
rows of `n_sample` ids; each mini-batch takes the next row (shared by all its rows), and the
store is redrawn when used up.
"""

from __future__ import annotations

import numpy as np
import torch


def sampling_weights(support: np.ndarray, alpha: float) -> np.ndarray:
    """support^alpha: the weights when no popularity table is given."""
    return np.asarray(support, dtype=np.float64) ** alpha


def sampling_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cdf / cdf[-1]


class SampleStore:
    def __init__(
        self,
        weights: np.ndarray,
        n_sample: int,
        store_size: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        if n_sample <= 0:
            raise ValueError("n_sample must be positive to use a sample store")
        self.n_sample = n_sample
        self.rows = max(1, store_size // n_sample)
        self.device = device
        self.generator = generator
        self.n_items = len(weights)
        self.cdf = torch.as_tensor(sampling_cdf(weights), device=device)
        self.draws = 0
        self._store: torch.Tensor | None = None
        self._next = self.rows

    def reseed(self, seed: int) -> None:
        """Restart the draws from `seed`: the next row comes from a fresh store."""
        self.generator.manual_seed(seed)
        self._next = self.rows

    def redraw(self) -> None:
        u = torch.rand(
            self.rows * self.n_sample,
            generator=self.generator,
            device=self.device,
            dtype=torch.float64,
        )
        idx = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.n_items - 1)
        self._store = idx.view(self.rows, self.n_sample)
        self._next = 0
        self.draws += 1

    def next(self) -> torch.Tensor:
        """The next row of `n_sample` item indices (int64, on the device)."""
        if self._next >= self.rows:
            self.redraw()
        row = self._store[self._next]
        self._next += 1
        return row
