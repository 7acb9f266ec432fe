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

import numpy as np
import torch

from gru4rec import losses
from gru4rec.batching import Schedule, session_parallel
from gru4rec.config import Config
from gru4rec.data import ItemMap, SessionData
from gru4rec.model import GRU4RecModel, inverted_dropout
from gru4rec.optim import AdagradM
from gru4rec.sampling import SampleStore

log = logging.getLogger("gru4rec.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from jobs.common.errors import ConfigError

        raise ConfigError(f"device {name!r} requested, but torch finds no CUDA GPU")
    return torch.device(name)


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
    ) -> None:
        self.cfg = cfg
        self.item_map = item_map
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        if model is None:
            model = GRU4RecModel(cfg, len(item_map), self.device)
            model.init_weights(cfg.seed)
        self.model = model
        self.optimizer = optimizer or AdagradM(cfg.learning_rate, cfg.momentum)
        self.epochs_done = epochs_done
        self.history: list[EpochStats] = []
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919 * epochs_done + 1)
        self.dropout_gen_seed = cfg.seed + epochs_done
        support = np.maximum(item_map.support, 1)
        self.store = (
            SampleStore(
                support, cfg.sample_alpha, cfg.n_sample, cfg.sample_store_size, self.device, gen
            )
            if cfg.n_sample > 0
            else None
        )
        log_support = torch.as_tensor(np.log(support), dtype=torch.float32, device=self.device)
        # logQ: in-batch targets come with frequency ~ support, the extra samples ~ support^alpha
        self.logq_target = cfg.logq * log_support if cfg.logq > 0 else None
        self.logq_sample = cfg.logq * cfg.sample_alpha * log_support if cfg.logq > 0 else None
        self._schedule: tuple[int, Schedule] | None = None
        # Leaf views into the flat dense buffer: gradients land per weight, updates write
        # through to the buffer (and so to the model).
        self._dense_leaves = {
            k: v.detach().requires_grad_() for k, v in model.dense_views().items()
        }

    # -- one step -----------------------------------------------------------------------------
    def step(
        self, inp: torch.Tensor, target: torch.Tensor, hidden: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cfg, model, opt = self.cfg, self.model, self.optimizer
        sample = self.store.next() if self.store is not None else None
        cols = target if sample is None else torch.cat([target, sample])
        shared = cfg.embedding == "shared"
        w_out = model.sparse["Wy"].index_select(0, cols).requires_grad_()
        by = model.sparse["By"].index_select(0, cols).requires_grad_()
        x_leaf = model.input_rows(inp).requires_grad_()
        x = x_leaf
        if cfg.dropout_p_embed > 0 and cfg.embedding != "onehot":
            x = inverted_dropout(x, cfg.dropout_p_embed)
        weights = self._dense_leaves
        for w in weights.values():
            w.grad = None
        outs = model.gru_layers(
            x,
            hidden,
            weights,
            cfg.dropout_p_hidden,
            True,
            x_projected=cfg.embedding == "onehot",
        )
        scores = torch.addmm(by.view(1, -1), outs[-1], w_out.t())
        shift = None
        if self.logq_target is not None:
            shift = self.logq_target.index_select(0, target)
            if sample is not None:
                shift = torch.cat([shift, self.logq_sample.index_select(0, sample)])
        row_loss = losses.compute(
            cfg.loss, scores, elu_param=cfg.elu_param, bpreg=cfg.bpreg, logq_shift=shift
        )
        loss = row_loss.sum() / cfg.batch_size
        loss.backward()
        opt.dense_steps(weights)
        if shared:  # Wy is both the input embedding and the output matrix
            rows = torch.cat([inp, cols])
            opt.sparse_step("Wy", model.sparse["Wy"], rows, torch.cat([x_leaf.grad, w_out.grad]))
        else:
            opt.sparse_step("Wy", model.sparse["Wy"], cols, w_out.grad)
            name = "E" if cfg.embedding == "separate" else "Wx0"
            opt.sparse_step(name, model.sparse[name], inp, x_leaf.grad)
        opt.sparse_step("By", model.sparse["By"], cols, by.grad.view(-1, 1))
        return loss.detach(), [o.detach() for o in outs]

    # -- epochs --------------------------------------------------------------------------------
    def schedule(self, data: SessionData) -> Schedule:
        key = id(data)
        if self._schedule is None or self._schedule[0] != key:
            self._schedule = (key, session_parallel(data.offsets, self.cfg.batch_size))
        return self._schedule[1]

    def train_epoch(self, data: SessionData, progress: bool | None = None) -> EpochStats:
        cfg = self.cfg
        sched = self.schedule(data)
        items = torch.as_tensor(data.items, device=self.device)
        pos = torch.as_tensor(sched.positions, device=self.device)
        inputs = items[pos]
        targets = items[pos + 1]
        offs = sched.step_offsets.tolist()
        width = offs[1] - offs[0]
        hidden = self.model.zero_hidden(width)
        total = torch.zeros((), device=self.device)
        min_columns = 2  # a row needs at least one negative
        skipped = 0
        bar = _progress(sched.n_steps, f"epoch {self.epochs_done + 1}", progress)
        # Softmax tails make tiny gradients and squared gradients; denormal floats are an
        # order of magnitude slower on x86 CPUs. Flushing them to zero changes nothing visible.
        flush = torch.set_flush_denormal(True) if self.device.type == "cpu" else False
        t0 = time.perf_counter()
        for t in range(sched.n_steps):
            keep = sched.keep.get(t)
            if keep is not None:
                k = torch.as_tensor(keep, device=self.device)
                hidden = [h.index_select(0, k) for h in hidden]
            reset = sched.reset.get(t)
            if reset is not None:
                r = torch.as_tensor(reset, device=self.device)
                hidden = [h.index_fill(0, r, 0.0) for h in hidden]
            a, b = offs[t], offs[t + 1]
            if b - a + cfg.n_sample < min_columns:
                skipped += 1
                continue
            loss, hidden = self.step(inputs[a:b], targets[a:b], hidden)
            total += loss
            if bar is not None and t % 50 == 0:
                bar.update(min(50, sched.n_steps - t))
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
            self.epochs_done, total_loss / max(1, sched.n_steps), seconds, data.n_pairs, skipped
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


def _progress(total: int, desc: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the dependencies
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False)
