"""python -m gru4rec train | evaluate | baselines

The input format is recognised from the path: an official GRU4Rec TSV file (SessionId, ItemId,
Time) or a split of the pipeline's Parquet datasets (`datasets/run=D/train`, with the item
index read from the `items/` table beside it). Every output of a command goes to one directory,
written under a staging name and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gru4rec import checkpoint as ckpt
from gru4rec.arguments import build_parser
from gru4rec.baselines import NAMES as BASELINES
from gru4rec.baselines import evaluate_baseline, item_knn
from gru4rec.config import Config
from gru4rec.data import (
    ItemMap,
    SamplingTable,
    SessionData,
    build_sessions,
    is_tsv,
    item_counts,
    items_path_for,
    load_item_map,
    popularity_path_for,
    read_compact,
    read_events,
)
from gru4rec.errors import Gru4RecError, NoInputError
from gru4rec.evaluate import evaluate_model
from gru4rec.outdir import RunDir
from gru4rec.report import write_report
from gru4rec.sknn import SessionIndex
from gru4rec.train import Trainer, resolve_device

log = logging.getLogger("gru4rec")


def load_split(path: str, item_map: ItemMap, name: str, times: bool = True) -> SessionData:
    """A split in `item_map`'s index: as integer arrays straight from a pipeline split written
    in training order (`read_compact`), else through a frame (`build_sessions`). `times`: keep
    each event's time (the recency-aware baselines need it)."""
    if not is_tsv(path):
        data = read_compact(path, item_map, name, times)
        if data is not None:
            return data
    return build_sessions(read_events(path), item_map, name)


def compact_train(args, times: bool) -> tuple[ItemMap, SessionData] | None:
    """A full training's item index and split as integer arrays, without a frame of the
    split (a window of 10^8 events); None where the split is not a compact pipeline split."""
    items_path = args.items or items_path_for(args.train)
    if args.warm_start or is_tsv(args.train) or items_path is None:
        return None
    item_map = ItemMap.read_parquet(items_path)
    train = read_compact(args.train, item_map, "train", times)
    return None if train is None else (item_map, train)


def data_summary(name: str, data: SessionData) -> dict:
    return {
        f"{name}_sessions": data.n_sessions,
        f"{name}_events": data.n_events,
        f"{name}_unknown_item_events_dropped": data.dropped_unknown,
        f"{name}_short_sessions_dropped": data.dropped_short,
    }


def run_baselines(train, test, item_map, ties, cutoffs) -> dict:
    out = {}
    knn = item_knn(train, len(item_map))
    sessions = SessionIndex.build(train.items, train.offsets, len(item_map), train.times)
    for name in BASELINES:
        t0 = time.perf_counter()
        res = evaluate_baseline(
            name, train, test, item_map.support, cutoffs, ties, knn=knn, sessions=sessions
        )
        log.info(
            "baseline %-8s recall@20 %.4f  mrr@20 %.4f  (%.1f s)",
            name,
            res.get("recall@20", float("nan")),
            res.get("mrr@20", float("nan")),
            time.perf_counter() - t0,
        )
        out[name] = res
    return out


def _log_metrics(prefix: str, metrics: dict) -> None:
    keys = [k for k in metrics if "@" in k]
    log.info("%s %s", prefix, "  ".join(f"{k} {metrics[k]:.4f}" for k in keys))


# -- commands ------------------------------------------------------------------------------
def _train_config(args, resumed) -> Config:
    """--params (or the resumed checkpoint's), then --config, --set and --device."""
    cfg = resumed.config if resumed is not None else Config.from_params(args.params)
    if args.config:
        cfg = cfg.with_file(args.config)
    cfg = cfg.with_overrides(args.overrides)
    if args.device:
        cfg = cfg.with_overrides([f"device={args.device}"])
    return cfg


def _sampling(args, item_map: ItemMap, cfg: Config) -> tuple[Config, SamplingTable | None]:
    """The popularity table training samples from, if any; its alpha is the alpha used. A
    warm start maps it by item id (its index may be another night's)."""
    path = args.popularity or popularity_path_for(args.train)
    if path is None:
        return cfg, None
    table = SamplingTable.read_parquet(path, None if args.warm_start else item_map)
    if table.alpha is not None and table.alpha != cfg.sample_alpha:
        log.info(
            "sampling from %s: its alpha %s replaces the parameter set's sample_alpha %s",
            path, table.alpha, cfg.sample_alpha,
        )  # fmt: skip
        cfg = dataclasses.replace(cfg, sample_alpha=table.alpha)
    return cfg, table


def _trainer(cfg: Config, item_map: ItemMap, resumed, table: SamplingTable | None) -> Trainer:
    weights = table.weights if table is not None else None
    if resumed is None:
        return Trainer(cfg, item_map, sample_weights=weights)
    device = resolve_device(cfg.device)
    log.info("resuming from %s after epoch %d", resumed.path, resumed.epochs_done)
    return Trainer(
        cfg,
        item_map,
        model=resumed.model(device, cfg),
        optimizer=resumed.optimizer(cfg, device),
        epochs_done=resumed.epochs_done,
        sample_weights=weights,
    )


def _train_metrics(args, cfg, trainer, history, train_seconds, sampling, train) -> dict:
    rates = [e.events_per_second for e in history]
    later = rates[1:] or rates
    seconds = [e.seconds for e in history[1:] or history]
    return {
        "events_per_second": statistics.median(later) if later else None,
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "train_seconds": train_seconds,
        "epochs": [
            {
                "epoch": e.epoch,
                "loss": e.loss,
                "seconds": e.seconds,
                "events_per_second": e.events_per_second,
            }
            for e in history
        ],
        "config": cfg.to_dict(),
        "sampling": sampling,
        "device": str(trainer.device),
        "n_items": len(trainer.item_map),
        "item_fingerprint": trainer.item_map.fingerprint,
        "ties": args.ties,
        "data": {"train": str(args.train), "test": str(args.test), **data_summary("train", train)},
    }


def select_epochs(args, cfg: Config, item_map: ItemMap, table) -> dict:
    """`--select-epochs TRAIN_TR VALID`: the number of epochs to train on --train."""
    from gru4rec.selection import choose_epochs

    tr_path, valid_path = args.select_epochs
    try:
        train_tr = load_split(tr_path, item_map, "train_tr", times=False)
        valid = load_split(valid_path, item_map, "valid", times=False)
    except NoInputError as exc:  # e.g. a window too short for a validation day
        log.warning("epoch selection skipped, training %d epochs: %s", cfg.n_epochs, exc)
        return {"metric": args.select_by, "best_epochs": cfg.n_epochs, "skipped": str(exc)}
    weights = table.weights if table is not None else None
    out = choose_epochs(
        cfg, item_map, train_tr, valid, args.select_by, args.patience,
        weights=weights, cutoffs=args.cutoffs, ties=args.ties, progress=args.progress,
    )  # fmt: skip
    out["data"] = {**data_summary("train_tr", train_tr), **data_summary("valid", valid)}
    return out


def _warm_trainer(args, cfg, train_frame, item_map, table):
    """(trainer, training frame, warm start, record, the event range considered) of
    `--warm-start`. The range covers every unseen event, trained or dropped by the item
    rules, so the next warm start does not take up the same sessions again."""
    from gru4rec import incremental as inc

    source = ckpt.Checkpoint(args.warm_start)
    inc.check_compatible(source, cfg)
    unseen = inc.unseen_sessions(train_frame, source.extra.get("data_range"), str(source.path))
    # an items/ table (given, or beside a pipeline split) lists the window's qualified items
    qualified = item_map if args.items or items_path_for(args.train) else None
    frame, tonight, filtered = inc.trainable(
        unseen, qualified, source.item_map, args.min_new_item_support,
        _window_counts(args.support_from),
    )  # fmt: skip
    ws = inc.warm_start(source, cfg, tonight, resolve_device(cfg.device))
    weights = None
    if table is not None:
        table_map = ItemMap(table.ids, np.zeros(len(table.ids), dtype=np.int64))
        weights = inc.grown_weights(table.weights, table_map, ws.item_map, cfg.sample_alpha)
    epochs = args.warm_epochs if args.warm_epochs is not None else cfg.n_epochs
    grown_cfg = dataclasses.replace(cfg, n_epochs=ws.epochs_done + epochs)
    trainer = Trainer(
        grown_cfg, ws.item_map, model=ws.model, optimizer=ws.optimizer,
        epochs_done=ws.epochs_done, sample_weights=weights,
    )  # fmt: skip
    # the trainer's index carries tonight's support (its logQ correction); the saved one the
    # lineage's: the checkpoint's support plus tonight's (the scorer's popularity fallback)
    ws = dataclasses.replace(ws, item_map=inc.lineage_support(source.item_map, ws.item_map))
    record = {
        "from": str(source.path),
        "epochs_before": ws.epochs_done,
        "known_items": len(source.item_map),
        "new_items": ws.new_items,
        "seen_before": ws.seen,
        "sessions_trained": int(frame["session_id"].nunique()),
        "events_trained": int(len(frame)),
        "events_in_split": int(len(train_frame)),
        "events_unseen": int(len(unseen)),
        **filtered,
    }
    return trainer, frame, ws, record, inc.data_range(unseen)


def _window_counts(paths) -> pd.Series | None:
    """Events per item id over `--support-from` (a window's session tables; missing ones, a
    day without a delivery, are skipped and said)."""
    if not paths:
        return None
    counts = []
    for path in paths:
        if not Path(path).exists():
            log.warning("--support-from: no events at %s (no delivery that day?); skipped", path)
            continue
        counts.append(item_counts(path))
    if not counts:
        raise NoInputError(f"--support-from: none of {len(paths)} paths exists: {paths[0]} ...")
    return pd.concat(counts).groupby(level=0).sum()


def _unseen_data(frame, item_map: ItemMap) -> SessionData | None:
    """A warm start's training sessions; None when there is nothing new (0 epochs then)."""
    if frame.empty:
        log.warning("warm start: no session the model has not seen; training 0 epochs")
        return None
    try:
        return build_sessions(frame, item_map, "train (unseen sessions)")
    except NoInputError as exc:
        log.warning("warm start: nothing to train on (%s); training 0 epochs", exc)
        return None


def cmd_train(args) -> int:
    from gru4rec import incremental as inc

    resumed = ckpt.Checkpoint(args.resume) if args.resume else None
    cfg = _train_config(args, resumed)
    compact = compact_train(args, times=bool(args.test and not args.no_baselines))
    if compact is not None:
        item_map, train = compact
        train_frame = None
    else:
        train_frame = read_events(args.train)
        item_map = load_item_map(train_frame, args.train, args.items, bool(args.warm_start))
        train = None
    if resumed is not None:
        resumed.check_items(item_map, args.train)
    cfg, table = _sampling(args, item_map, cfg)
    sampling = {
        "source": table.source if table is not None else "support^sample_alpha of the train split",
        "alpha": cfg.sample_alpha,
    }
    warm = None
    seen = resumed.extra.get("data_range") if resumed is not None else None
    lineage = (resumed.extra.get("lineage") if resumed is not None else None) or {
        "full": str(args.out),
        "warm_starts": 0,
    }
    refused = None
    window_frame = train_frame  # the whole split: baselines, summaries
    considered = None  # the event range this run takes in (trained, or dropped by rule)
    if args.warm_start:
        try:
            trainer, train_frame, ws, warm, considered = _warm_trainer(
                args, cfg, train_frame, item_map, table
            )
            item_map, seen, lineage = ws.item_map, ws.seen, ws.lineage
        except ckpt.CheckpointError as exc:
            if not args.fallback_full:
                raise
            refused = str(exc)
            log.warning("warm start refused, training a full model instead: %s", exc)
    selection = None
    if warm is None and table is not None and table.ids is not None:  # a refused warm start
        table = SamplingTable.read_parquet(table.source, item_map)  # checked against the index
    if warm is None:
        if args.select_epochs and resumed is None:
            selection = select_epochs(args, cfg, item_map, table)
            cfg = dataclasses.replace(cfg, n_epochs=selection["best_epochs"])
        trainer = _trainer(cfg, item_map, resumed, table)
    if warm is None and resumed is None:
        lineage["epochs"] = cfg.n_epochs  # what the lineage's warm starts train for
    if warm is None and train is not None:
        first, last = train.seconds_range
        considered = {"first": first, "last": last}
    elif warm is None:
        considered = inc.data_range(train_frame)
    seen = inc.merge_ranges(seen, considered)
    if train is None:
        train = build_sessions(window_frame, item_map, "train")
    fit_on = train
    if warm is not None:
        fit_on = _unseen_data(train_frame, item_map)
        warm["trained_pairs"] = fit_on.n_pairs if fit_on is not None else 0
        if fit_on is None:  # nothing trained: not a step further from the full training
            lineage["warm_starts"] -= 1
    test = load_split(args.test, item_map, "test") if args.test else None
    log.info("training on %s: %s", trainer.device, json.dumps(trainer.cfg.to_dict()))
    with RunDir(args.out) as stage:
        t0 = time.perf_counter()
        history = trainer.fit(fit_on, args.progress) if fit_on is not None else []
        seconds = time.perf_counter() - t0
        extra = {"sampling": sampling, "data_range": seen, "lineage": lineage}
        ckpt.save(
            stage / ckpt.FILENAME, trainer.model, item_map, trainer.optimizer,
            trainer.epochs_done, extra=extra,
        )  # fmt: skip
        cfg = trainer.cfg
        (stage / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        item_map.to_frame().to_parquet(stage / "items.parquet", index=False)
        metrics = _train_metrics(args, cfg, trainer, history, seconds, sampling, train)
        metrics.update(mode="incremental" if warm else "full", data_range=seen, lineage=lineage)
        if warm:
            metrics["warm_start"] = warm
        if refused:
            metrics["warm_start_refused"] = refused
        if selection:
            metrics["epoch_selection"] = selection
        if test is not None:
            result = evaluate_model(trainer.model, test, args.cutoffs, args.ties)
            _log_metrics("GRU4Rec", result)
            metrics.update(result)
            metrics["data"].update(data_summary("test", test))
            if not args.no_baselines:
                metrics["baselines"] = run_baselines(train, test, item_map, args.ties, args.cutoffs)
        write_report(stage, metrics)
    log.info("wrote %s (model.pt, metrics.json, report.html)", args.out)
    return 0


def cmd_evaluate(args) -> int:
    loaded = ckpt.Checkpoint(args.model)
    cfg = loaded.config.with_overrides([f"device={args.device}"])
    model = loaded.model(resolve_device(cfg.device), cfg)
    frame = read_events(args.test)
    common = np.ones(len(frame), dtype=bool)
    ids = frame["item_id"].to_numpy(dtype=object)
    for other in [loaded, *(ckpt.Checkpoint(path) for path in args.known_by)]:
        common &= other.item_map.lookup(ids) >= 0
    result: dict = {"test_events": int(len(frame)), "common_item_events": int(common.sum())}
    if args.known_by and not common.any():
        log.warning("no test event has an item every model knows: nothing to evaluate")
    else:
        test = build_sessions(frame[common] if args.known_by else frame, loaded.item_map, "test")
        result.update(evaluate_model(model, test, args.cutoffs, args.ties))
        result.update(data_summary("test", test))
        _log_metrics("GRU4Rec", result)
    result.update(
        {
            "ties": args.ties,
            "model": str(loaded.path),
            "known_by": [str(p) for p in args.known_by],
            "test": str(args.test),
            "n_items": len(loaded.item_map),
        }
    )
    _emit(args.out, result)
    return 0


def cmd_baselines(args) -> int:
    train_frame = read_events(args.train)
    item_map = load_item_map(train_frame, args.train, args.items)
    train = build_sessions(train_frame, item_map, "train")
    test = load_split(args.test, item_map, "test")
    result = {
        "baselines": run_baselines(train, test, item_map, args.ties, args.cutoffs),
        "ties": args.ties,
        "n_items": len(item_map),
    }
    _emit(args.out, result)
    return 0


def _emit(out: str | None, result: dict) -> None:
    text = json.dumps(result, indent=2, sort_keys=True, default=float)
    if out:
        with RunDir(out) as stage:
            (stage / "metrics.json").write_text(text + "\n")
        log.info("wrote %s/metrics.json", out)
    else:
        print(text)


def cmd_score(args) -> int:
    from gru4rec.score import score_sessions

    summary = score_sessions(
        args.model,
        args.sessions,
        args.out,
        k=args.k,
        exclude_seen=args.exclude_seen,
        device=args.device,
        batch_size=args.batch_size,
        max_events=args.max_events,
        spill_parent=args.spill_dir,
        context_path=args.context,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "baselines": cmd_baselines,
    "score": cmd_score,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main else None
    if on_main:
        # SIGTERM (a timeout, a stopped task) unwinds like an exception: staging directories
        # and spilled files are removed on the way out
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return COMMANDS[args.command](args)
    except Gru4RecError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2
    except FloatingPointError as exc:
        log.error("training diverged: %s", exc)
        return 3
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
