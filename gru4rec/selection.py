"""Epoch selection on a validation split: how many epochs tonight's full training runs.

Train on `train_tr` (the training split minus its last days), evaluate on `valid` (those days)
after every epoch, up to `n_epochs` or until `patience` epochs in a row bring no gain; the
chosen count is the best epoch's (the earliest on ties). The model is then trained from
scratch on the whole training split for that many epochs, so the served model has seen the
validation days too.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from gru4rec.config import Config
from gru4rec.data import ItemMap, SessionData
from gru4rec.errors import ConfigError
from gru4rec.evaluate import evaluate_model
from gru4rec.train import Trainer

log = logging.getLogger("gru4rec.selection")


def parse_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.lower().partition("@")
    if name not in ("recall", "mrr") or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"selection metric: expected recall@K or mrr@K, found {metric!r}")
    return f"{name}@{int(k)}", int(k)


def choose_epochs(
    cfg: Config,
    item_map: ItemMap,
    train_tr: SessionData,
    valid: SessionData,
    metric: str = "mrr@20",
    patience: int = 2,
    weights: np.ndarray | None = None,
    cutoffs: tuple[int, ...] = (20,),
    ties: str = "conservative",
    progress: bool | None = False,
) -> dict:
    """The validation curve and the best epoch count (at most cfg.n_epochs)."""
    metric, k = parse_metric(metric)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ConfigError(f"patience: expected an integer >= 1, found {patience!r}")
    trainer = Trainer(cfg, item_map, sample_weights=weights)
    cutoffs = tuple(sorted({*cutoffs, k, 20}))
    curve: list[dict] = []
    best: dict | None = None
    t0 = time.perf_counter()
    for _ in range(cfg.n_epochs):
        stats = trainer.train_epoch(train_tr, progress)
        result = evaluate_model(trainer.model, valid, cutoffs, ties)
        point = {"epoch": stats.epoch, "loss": stats.loss, metric: result[metric]}
        point.update({key: result[key] for key in ("recall@20", "mrr@20")})
        curve.append(point)
        log.info("epoch selection: epoch %d  valid %s %.4f", stats.epoch, metric, result[metric])
        if best is None or point[metric] > best[metric]:
            best = point
        elif stats.epoch - best["epoch"] >= patience:
            break
    return {
        "metric": metric,
        "best_epochs": best["epoch"],
        "best": best[metric],
        "max_epochs": cfg.n_epochs,
        "patience": patience,
        "curve": curve,
        "seconds": time.perf_counter() - t0,
    }
