"""Training: session-parallel mini-batches, shared extra negatives, Adagrad with momentum.

One step (no back-propagation through time: the hidden state enters every step detached):
gather the item rows the step touches (inputs, targets, extra samples), run the GRU layers,
score the targets and samples, compute the loss summed over rows / batch_size, back-propagate
into the gathered rows and the dense weights, and update only those rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

from gru4rec import losses
from gru4rec.batching import Schedule, apply_slot_changes, schedule_chunks, session_parallel
from gru4rec.config import Config
from gru4rec.data import ItemMap, SessionData
from gru4rec.errors import ConfigError
from gru4rec.losses import bpr_max_and_grad
from gru4rec.model import GRU4RecModel, dropout_mask
from gru4rec.optim import AdagradM
from gru4rec.runtime import tune_allocator
from gru4rec.sampling import SampleStore, sampling_weights

# A split of more training points than this is trained on its schedule computed in pieces.
SCHEDULE_PIECE = 4_000_000

log = logging.getLogger("gru4rec.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested, but torch finds no CUDA GPU")
    return torch.device(name)


@dataclasses.dataclass(frozen=True)
class _Forward:
    """What one step's forward pass leaves for its backward pass and updates."""

    rows: torch.Tensor  # (R,) gathered item rows of [Wy | By]
    out_rows: torch.Tensor  # (C, d + 1) the scored columns' rows
    top: torch.Tensor  # (B, d) the last layer's output
    saved: list  # per layer: x_in, h_prev, r, z, r * h_prev, c, dropout mask
    embed_mask: torch.Tensor | None  # (B, d_in) input dropout mask
    new_hidden: list  # per layer (B, h_i)
    scores: torch.Tensor  # (B, C)


@dataclasses.dataclass
class EpochStats:
    epoch: int
    loss: float
    seconds: float
    events: int
    skipped_steps: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


class Trainer:
    """Trains a GRU4RecModel on one SessionData with one Config."""

    def __init__(
        self,
        cfg: Config,
        item_map: ItemMap,
        model: GRU4RecModel | None = None,
        optimizer: AdagradM | None = None,
        epochs_done: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> None:
        """`sample_weights`: the extra negatives' weights in item index order (the pipeline's
        popularity table); none: support^sample_alpha of `item_map`."""
        self.cfg = cfg
        self.item_map = item_map
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            tune_allocator()
        if model is None:
            model = GRU4RecModel(cfg, len(item_map), self.device)
            model.init_weights(cfg.seed)
        self.model = model
        self.optimizer = optimizer or AdagradM(cfg.learning_rate, cfg.momentum)
        self.epochs_done = epochs_done
        self.history: list[EpochStats] = []
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919 * epochs_done + 1)
        support = np.maximum(item_map.support, 1)
        if sample_weights is None:
            sample_weights = sampling_weights(support, cfg.sample_alpha)
        elif len(sample_weights) != len(item_map) or not np.all(np.asarray(sample_weights) > 0):
            raise ConfigError(
                f"sample_weights: expected {len(item_map)} positive weights (one per item), "
                f"found {len(sample_weights)}"
            )
        self.store = (
            SampleStore(sample_weights, cfg.n_sample, cfg.sample_store_size, self.device, gen)
            if cfg.n_sample > 0
            else None
        )

        # logQ: in-batch targets come with frequency ~ support, the extra samples ~ their weight
        def log_of(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.log(values), dtype=torch.float32, device=self.device)

        self.logq_target = cfg.logq * log_of(support) if cfg.logq > 0 else None
        self.logq_sample = cfg.logq * log_of(sample_weights) if cfg.logq > 0 else None
        self._schedule: tuple[SessionData, Schedule] | None = None
        # Named views of the flat dense weights and of one flat gradient buffer: the backward
        # pass writes each gradient into its view, one optimizer step updates them all.
        self._dense = model.dense_views()
        self._dense_grad_flat = torch.zeros_like(model.dense)
        self._dense_grads = model.dense_views(self._dense_grad_flat)
        self._bias_mask_key: tuple[int, int] | None = None
        self._bias_mask = torch.ones(0, dtype=torch.bool)

    # -- one step -----------------------------------------------------------------------------
    # Shapes: B rows in the mini-batch, S extra samples, C = B + S scored columns, d = the last
    # layer's width, R gathered item rows (B + C in shared mode: inputs, then columns; else C).
    @torch.no_grad()
    def step(
        self,
        inp: torch.Tensor,
        target: torch.Tensor,
        hidden: list[torch.Tensor],
        sample: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One mini-batch: forward, hand-derived backward, Adagrad-momentum on touched rows.

        The gradients are written out by hand (checked against autograd in the tests): a step
        is ~60 tensor operations instead of an autograd graph of ~150, which is what bounds
        the speed of these small matrices on a CPU (and the kernel launches on a GPU).
        """
        if sample is None and self.store is not None:
            sample = self.store.next()
        fwd = self._forward(inp, target, sample, hidden)
        loss, d_scores = self._loss_and_grad(fwd.scores, target, sample)
        d_table, d_x = self._output_backward(fwd, d_scores)
        d_x = self._gru_backward(fwd, d_x)
        self._update(fwd, inp, d_table, d_x)
        return loss, fwd.new_hidden

    def _forward(self, inp, target, sample, hidden) -> _Forward:
        """Embed the inputs (B,), run the GRU layers, score the C columns: scores (B, C)."""
        cfg, model = self.cfg, self.model
        cols = target if sample is None else torch.cat([target, sample])  # (C,)
        m, d_out = inp.shape[0], model.layers[-1]
        shared = cfg.embedding == "shared"
        # one gather for the input embedding (shared mode) and the [Wy | By] output rows
        rows = torch.cat([inp, cols]) if shared else cols  # (R,)
        table = model.out_table.index_select(0, rows)  # (R, d + 1)
        out_rows = table[m:] if shared else table  # (C, d + 1)
        x = table[:m, :d_out] if shared else model.input_rows(inp)  # (B, d_in)
        embed_mask = None
        if cfg.dropout_p_embed > 0 and cfg.embedding != "onehot":
            embed_mask = dropout_mask(x, cfg.dropout_p_embed)
            x = x * embed_mask
        saved: list[tuple] = []
        new_hidden = model.gru_layers(
            x, hidden, self._dense, cfg.dropout_p_hidden, True,
            x_projected=cfg.embedding == "onehot", saved=saved,
        )  # fmt: skip
        top = new_hidden[-1]  # (B, d)
        scores = torch.addmm(out_rows[:, d_out], top, out_rows[:, :d_out].t())  # (B, C)
        return _Forward(rows, out_rows, top, saved, embed_mask, new_hidden, scores)

    def _output_backward(
        self, fwd: _Forward, d_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the gathered [Wy | By] rows, d_table (R, d + 1), and of the top layer's
        output, d_x (B, d)."""
        m, d_out = fwd.top.shape
        d_table = torch.empty(fwd.rows.shape[0], d_out + 1, dtype=fwd.top.dtype, device=self.device)
        d_out_rows = d_table[m:] if self.cfg.embedding == "shared" else d_table  # (C, d + 1)
        torch.mm(d_scores.t(), fwd.top, out=d_out_rows[:, :d_out])  # d Wy rows
        torch.sum(d_scores, dim=0, out=d_out_rows[:, d_out])  # d By rows
        return d_table, d_scores.mm(fwd.out_rows[:, :d_out])

    def _gru_backward(self, fwd: _Forward, d_x: torch.Tensor) -> torch.Tensor:
        """Through the GRU layers, last to first (no BPTT: h_prev is a constant); fills the
        dense gradients and returns the gradient of layer 0's input, (B, d_in) (one-hot: of
        its Wx0 rows, (B, 3 h0))."""
        w, grads = self._dense, self._dense_grads
        onehot = self.cfg.embedding == "onehot"
        for i in range(len(fwd.saved) - 1, -1, -1):
            h = self.model.layers[i]
            x_in, h_prev, r, z, rh, c, mask = fwd.saved[i]  # (B, in_i), then (B, h) each
            d_h = d_x * mask if mask is not None else d_x
            d_c = d_h * (1 - z)
            d_z = d_h * (h_prev - c)
            d_vx = torch.empty(d_h.shape[0], 3 * h, dtype=d_h.dtype, device=d_h.device)  # r|z|c
            d_vc = torch.mul(d_c, 1 - c * c, out=d_vx[:, 2 * h :])
            torch.mul(d_z, z * (1 - z), out=d_vx[:, h : 2 * h])
            d_rh = d_vc.mm(w[f"Wh_c{i}"].t())
            torch.mul(d_rh * h_prev, r * (1 - r), out=d_vx[:, :h])
            torch.mm(rh.t(), d_vc, out=grads[f"Wh_c{i}"])
            torch.mm(h_prev.t(), d_vx[:, : 2 * h], out=grads[f"Wh_rz{i}"])
            torch.sum(d_vx, dim=0, out=grads[f"b{i}"])
            if i == 0 and onehot:
                d_x = d_vx  # gradient of the Wx0 rows
            else:
                torch.mm(x_in.t(), d_vx, out=grads[f"Wx{i}"])
                d_x = d_vx.mm(w[f"Wx{i}"].t())
        if fwd.embed_mask is not None:
            d_x = d_x * fwd.embed_mask
        return d_x

    def _update(self, fwd: _Forward, inp, d_table: torch.Tensor, d_x: torch.Tensor) -> None:
        """One optimizer step on the dense weights and on the touched item rows only."""
        opt, model = self.optimizer, self.model
        opt.dense_step("dense", model.dense, self._dense_grad_flat)
        if self.cfg.embedding == "shared":  # Wy is both the input embedding and the output
            m, d_out = d_x.shape
            d_table[:m, :d_out] = d_x
            d_table[:m, d_out] = 0.0
            bias_touched = self._bias_touched(m, fwd.out_rows.shape[0])
            opt.sparse_step("WyBy", model.out_table, fwd.rows, d_table, bias_touched)
        else:
            opt.sparse_step("WyBy", model.out_table, fwd.rows, d_table)
            name = "E" if self.cfg.embedding == "separate" else "Wx0"
            opt.sparse_step(name, model.sparse[name], inp, d_x)

    def _bias_touched(self, m: int, n: int) -> torch.Tensor:
        """Occurrence mask over cat(inputs, columns): only scored columns touch By."""
        key = (m, n)
        if self._bias_mask_key != key:
            mask = torch.ones(m + n, dtype=torch.bool, device=self.device)
            mask[:m] = False
            self._bias_mask, self._bias_mask_key = mask, key
        return self._bias_mask

    def _loss_and_grad(
        self, scores: torch.Tensor, target: torch.Tensor, sample: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss / batch_size, its gradient w.r.t. the scores)."""
        cfg = self.cfg
        scale = 1.0 / cfg.batch_size
        if cfg.loss == "cross-entropy":
            if self.logq_target is not None:
                shift = self.logq_target.index_select(0, target)
                if sample is not None:
                    shift = torch.cat([shift, self.logq_sample.index_select(0, sample)])
                scores = scores - shift
            # The formula itself, -log(softmax(r)_i + 1e-24): an underflowing p_i gives the
            # capped loss -log(1e-24), and the gradient w * (softmax(r) - onehot_i) with
            # w = p_i / (p_i + 1e-24) vanishes there, as the formula's does.
            prob = torch.softmax(scores, dim=1)
            p_i = prob.diagonal().clone()
            loss = -torch.log(p_i + losses.EPS).sum()
            weight = p_i.div_(p_i + losses.EPS).mul_(scale)
            grad = prob.mul_(weight.view(-1, 1))
            grad.diagonal().sub_(weight)
            return loss * scale, grad
        if cfg.loss == "bpr-max":
            return bpr_max_and_grad(scores, cfg.elu_param, cfg.bpreg, scale)
        leaf = scores.detach().requires_grad_()
        with torch.enable_grad():
            row_loss = losses.compute(cfg.loss, leaf, elu_param=cfg.elu_param, bpreg=cfg.bpreg)
            loss = row_loss.sum() * scale
            (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad

    # -- epochs --------------------------------------------------------------------------------
    def schedule(self, data: SessionData) -> Schedule:
        if self._schedule is None or self._schedule[0] is not data:
            self._schedule = (data, session_parallel(data.offsets, self.cfg.batch_size))
        return self._schedule[1]

    def schedule_pieces(self, data: SessionData) -> Iterator[Schedule]:
        """The epoch's schedule: kept whole for a split of up to SCHEDULE_PIECE training
        points; computed piece by piece, each epoch, for a larger one (bounded memory)."""
        if data.n_pairs <= SCHEDULE_PIECE:
            yield self.schedule(data)
        else:
            yield from schedule_chunks(data.offsets, self.cfg.batch_size, SCHEDULE_PIECE)

    def _seed_epoch(self) -> None:
        """Every epoch's randomness (dropout masks, extra samples) is a function of the seed
        and the epoch number only: a run resumed or warm-started after epoch e draws exactly
        what an uninterrupted run draws in epoch e + 1."""
        e = self.epochs_done
        torch.manual_seed(self.cfg.seed + 1_000_003 * e)  # dropout: the global generator
        if self.store is not None:
            self.store.reseed(self.cfg.seed + 7919 * e + 1)

    def train_epoch(self, data: SessionData, progress: bool | None = None) -> EpochStats:
        cfg = self.cfg
        self._seed_epoch()
        items = torch.as_tensor(data.items, device=self.device)
        hidden = None
        total = torch.zeros((), device=self.device)
        min_columns = 2  # a row needs at least one negative
        n_steps = skipped = 0
        bar = _progress(data.n_pairs, f"epoch {self.epochs_done + 1}", progress, "event")
        # Softmax tails make tiny gradients and squared gradients; denormal floats are an
        # order of magnitude slower on x86 CPUs. Flushing them to zero changes nothing visible.
        flush = torch.set_flush_denormal(True) if self.device.type == "cpu" else False
        t0 = time.perf_counter()
        for sched in self.schedule_pieces(data):
            pos = torch.as_tensor(sched.positions, device=self.device)
            inputs = items[pos].long()  # int32 items of a compact split: one piece in int64
            targets = items[pos + 1].long()
            del pos
            offs = sched.step_offsets.tolist()
            if hidden is None:
                hidden = self.model.zero_hidden(offs[1] - offs[0])
            for t in range(sched.n_steps):
                hidden = apply_slot_changes(sched, t, hidden)
                a, b = offs[t], offs[t + 1]
                if b - a + cfg.n_sample < min_columns:
                    skipped += 1
                    continue
                loss, hidden = self.step(inputs[a:b], targets[a:b], hidden)
                total += loss
                if bar is not None and t % 50 == 0:
                    bar.update(offs[min(t + 50, sched.n_steps)] - offs[t])
            n_steps += sched.n_steps
        total_loss = float(total)  # one device sync per epoch
        seconds = time.perf_counter() - t0
        if flush:
            torch.set_flush_denormal(False)
        if bar is not None:
            bar.close()
        if not math.isfinite(total_loss):
            raise FloatingPointError(
                f"epoch {self.epochs_done + 1}: the loss is {total_loss}; lower learning_rate "
                f"(now {cfg.learning_rate}) or check the input"
            )
        self.epochs_done += 1
        stats = EpochStats(
            self.epochs_done, total_loss / max(1, n_steps), seconds, data.n_pairs, skipped
        )
        self.history.append(stats)
        log.info(
            "epoch %d/%d  loss %.4f  %.1f s  %s events/s",
            stats.epoch,
            cfg.n_epochs,
            stats.loss,
            stats.seconds,
            f"{stats.events_per_second:,.0f}",
        )
        return stats

    def fit(self, data: SessionData, progress: bool | None = None) -> list[EpochStats]:
        if data.n_pairs == 0:
            raise ValueError("no training pairs")
        while self.epochs_done < self.cfg.n_epochs:
            self.train_epoch(data, progress)
        return self.history


def _progress(total: int, desc: str, enabled: bool | None, unit: str = "batch"):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the dependencies
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False)
