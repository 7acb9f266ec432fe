"""The GRU4Rec network: item embedding modes, stacked GRU layers, output scores.

Parameters are plain tensors, not an nn.Module: the trainer gathers the item-indexed rows it
needs (`Wy`, `By`, a separate embedding `E`, or the one-hot input matrix `Wx0`) and updates
only those rows (see optim.py), and the dense GRU weights live in one flat buffer so that one
optimizer step updates all of them at once.

GRU cell: the original (Cho et al. 2014) formulation with one bias per gate,
    r, z = sigmoid(x Wx_rz + h Wh_rz + b_rz)
    c    = tanh(x Wx_c + (r * h) Wh_c + b_c)
    h'   = z * h + (1 - z) * c
Each layer's output goes through inverted dropout (training only), feeds the next layer and is
stored as that layer's next hidden state.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gru4rec.config import Config


def glorot_(t: torch.Tensor, fan_in: int, fan_out: int, generator: torch.Generator) -> None:
    """Uniform in [-sigma, sigma] with sigma = sqrt(6 / (fan_in + fan_out))."""
    sigma = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        t.uniform_(-sigma, sigma, generator=generator)


def dropout_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout mask: 0 with probability p, else 1 / (1 - p) (p is the DROP rate).

    Drawing uniforms and comparing is several times faster than the Bernoulli kernel on CPUs.
    """
    return (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))


class GRU4RecModel:
    """Weights of one GRU4Rec network over `n_items` items."""

    def __init__(self, cfg: Config, n_items: int, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.n_items = n_items
        self.device = torch.device(device)
        self.layers = cfg.layers
        out_dim = cfg.layers[-1]
        if cfg.embedding == "shared":
            in_dim = out_dim
        elif cfg.embedding == "separate":
            in_dim = cfg.embedding_dim
        else:
            in_dim = 0  # one-hot: layer 0's input matrix is indexed by item
        self.in_dim = in_dim
        # Dense weights: one flat buffer, named views into it.
        self.layout: dict[str, tuple[int, tuple[int, ...], tuple[int, int]]] = {}
        size = 0
        for i, h in enumerate(cfg.layers):
            d_in = in_dim if i == 0 else cfg.layers[i - 1]
            shapes = {
                f"Wh_rz{i}": ((h, 2 * h), (h, h)),  # gate blocks: fan_in, fan_out per block
                f"Wh_c{i}": ((h, h), (h, h)),
                f"b{i}": ((3 * h,), (0, 0)),
            }
            if not (i == 0 and cfg.embedding == "onehot"):
                shapes[f"Wx{i}"] = ((d_in, 3 * h), (d_in, h))
            for name, (shape, fans) in shapes.items():
                self.layout[name] = (size, shape, fans)
                size += math.prod(shape)
        self.dense = torch.zeros(size, device=self.device)
        # Item-indexed weights.
        # Output weights Wy and biases By share one table [Wy | By]: a training step gathers
        # and updates both with one index operation each (Wy/By below are views into it).
        self.out_table = torch.zeros(n_items, out_dim + 1, device=self.device)
        self.sparse: dict[str, torch.Tensor] = {
            "Wy": self.out_table[:, :out_dim],
            "By": self.out_table[:, out_dim:],
        }
        if cfg.embedding == "separate":
            self.sparse["E"] = torch.zeros(n_items, in_dim, device=self.device)
        if cfg.embedding == "onehot":
            self.sparse["Wx0"] = torch.zeros(n_items, 3 * cfg.layers[0], device=self.device)

    # -- initialization --------------------------------------------------------------------
    def init_weights(self, seed: int) -> None:
        """Glorot-uniform per gate block, biases zero; deterministic for a seed (drawn on CPU)."""
        gen = torch.Generator().manual_seed(seed)
        flat = torch.zeros(self.dense.numel())
        for name, (offset, shape, (fan_in, fan_out)) in self.layout.items():
            n = math.prod(shape)
            if name.startswith("b"):
                continue
            block = flat[offset : offset + n].view(shape)
            n_blocks = shape[1] // fan_out
            for b in range(n_blocks):
                glorot_(block[:, b * fan_out : (b + 1) * fan_out], fan_in, fan_out, gen)
        self.dense.copy_(flat)
        out_dim = self.layers[-1]
        for name, t in self.sparse.items():
            if name == "By":
                t.zero_()
                continue
            cpu = torch.empty(t.shape)
            if name == "Wx0":
                h = self.layers[0]
                for b in range(3):
                    glorot_(cpu[:, b * h : (b + 1) * h], self.n_items, h, gen)
            else:
                glorot_(cpu, self.n_items, out_dim if name == "Wy" else t.shape[1], gen)
            t.copy_(cpu)

    # -- views ------------------------------------------------------------------------------
    def dense_views(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        flat = self.dense if flat is None else flat
        return {
            name: flat[offset : offset + math.prod(shape)].view(shape)
            for name, (offset, shape, _) in self.layout.items()
        }

    # -- forward ----------------------------------------------------------------------------
    def gru_layers(
        self,
        x: torch.Tensor,
        hidden: list[torch.Tensor],
        w: dict[str, torch.Tensor],
        p_hidden: float,
        training: bool,
        x_projected: bool = False,
        saved: list[tuple] | None = None,
    ) -> list[torch.Tensor]:
        """One step through every layer; returns each layer's (dropped-out) output.

        With `x_projected`, x is already layer 0's input projection (one-hot mode: rows of Wx0).
        With `saved`, each layer appends (x, h_prev, r, z, r * h_prev, c, dropout mask or None)
        for the trainer's backward pass.
        """
        outputs = []
        for i, h_prev in enumerate(hidden):
            h = self.layers[i]
            b = w[f"b{i}"]
            vx = x + b if (i == 0 and x_projected) else torch.addmm(b, x, w[f"Wx{i}"])
            rz = torch.sigmoid(torch.addmm(vx[:, : 2 * h], h_prev, w[f"Wh_rz{i}"]))
            r, z = rz[:, :h], rz[:, h:]
            rh = r * h_prev
            c = torch.tanh(torch.addmm(vx[:, 2 * h :], rh, w[f"Wh_c{i}"]))
            out = torch.lerp(c, h_prev, z)  # z * h_prev + (1 - z) * c
            mask = None
            if training and p_hidden > 0:
                mask = dropout_mask(out, p_hidden)
                out = out * mask
            if saved is not None:
                saved.append((x, h_prev, r, z, rh, c, mask))
            outputs.append(out)
            x = out
        return outputs

    def input_rows(self, item_idx: torch.Tensor) -> torch.Tensor:
        table = {"shared": "Wy", "separate": "E", "onehot": "Wx0"}[self.cfg.embedding]
        return self.sparse[table].index_select(0, item_idx)

    @torch.no_grad()
    def step_inference(self, item_idx: torch.Tensor, hidden: list[torch.Tensor]):
        """Next hidden states for a batch of current items (no dropout)."""
        x = self.input_rows(item_idx)
        return self.gru_layers(
            x, hidden, self.dense_views(), 0.0, False, self.cfg.embedding == "onehot"
        )

    @torch.no_grad()
    def score_all(self, h_last: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each row of the last layer's output (no final activation:
        softmax and ELU are monotonic, so rankings are the same)."""
        return torch.addmm(self.sparse["By"].reshape(1, -1), h_last, self.sparse["Wy"].t())

    def zero_hidden(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, h, device=self.device) for h in self.layers]

    # -- (de)serialization ------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"dense.{k}": v.detach().cpu().clone() for k, v in self.dense_views().items()}
        state.update({f"sparse.{k}": v.detach().cpu().clone() for k, v in self.sparse.items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict_keys())
        found = set(state)
        if expected != found:
            raise ValueError(
                f"weights do not fit this configuration: expected {sorted(expected)}, "
                f"found {sorted(found)}"
            )
        views = self.dense_views()
        for k, v in views.items():
            _copy_checked(v, state[f"dense.{k}"], k)
        for k, v in self.sparse.items():
            _copy_checked(v, state[f"sparse.{k}"], k)

    def state_dict_keys(self) -> list[str]:
        return [f"dense.{k}" for k in self.layout] + [f"sparse.{k}" for k in self.sparse]

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.state_dict().items()}


def _copy_checked(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(
            f"weight {name}: expected shape {tuple(dst.shape)}, found {tuple(src.shape)}"
        )
    with torch.no_grad():
        dst.copy_(src.to(dst.device, dst.dtype))
