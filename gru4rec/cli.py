"""python -m gru4rec train | evaluate | baselines

The input format is recognised from the path: an official GRU4Rec TSV file (SessionId, ItemId,
Time) or a split of the pipeline's Parquet datasets (`datasets/run=D/train`, with the item
index read from the `items/` table beside it). Every output of a command goes to one directory,
written under a staging name and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from gru4rec import checkpoint as ckpt
from gru4rec.baselines import NAMES as BASELINES
from gru4rec.baselines import evaluate_baseline, item_knn
from gru4rec.config import PARAM_SETS, TIE_MODES, Config
from gru4rec.data import ItemMap, SessionData, build_sessions, load_item_map, read_events
from gru4rec.evaluate import evaluate_model
from gru4rec.report import write_report
from gru4rec.train import Trainer, resolve_device
from jobs.common.errors import ConfigError, PipelineError

log = logging.getLogger("gru4rec")


# -- helpers -----------------------------------------------------------------------------------
def _cutoffs(value: str) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(x) for x in value.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 1,5,10,20, found {value!r}"
        ) from None
    if not out or out[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive cutoffs, found {value!r}")
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ties", default="conservative", choices=TIE_MODES, help="rank ties")
    p.add_argument("--cutoffs", type=_cutoffs, default=(1, 5, 10, 20), help="k for Recall/MRR@k")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; none: all")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gru4rec",
        description="GRU4Rec: train, evaluate and compare with baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    t = sub.add_parser("train", help="train a model (and evaluate it)", formatter_class=fmt)
    t.add_argument("--train", required=True, help="training split: TSV file or Parquet split")
    t.add_argument("--test", help="test split to evaluate on after training")
    t.add_argument(
        "--items", help="item index table; none: the items/ table beside a Parquet split"
    )
    t.add_argument(
        "--params", default="rsc15", choices=sorted(PARAM_SETS), help="named parameter set"
    )
    t.add_argument("--config", help="JSON file of parameters, applied over --params")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter (repeatable), e.g. --set n_epochs=5 --set layers=200",
    )
    t.add_argument("--device", help="cpu, cuda, cuda:N or auto; none: the config's (auto)")
    t.add_argument("--resume", help="continue training from this checkpoint (file or run dir)")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--no-baselines", action="store_true", help="skip POP/S-POP/Item-KNN")
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar; none: when stderr is a terminal",
    )
    _common(t)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint", formatter_class=fmt)
    e.add_argument("--model", required=True, help="checkpoint file or run directory")
    e.add_argument("--test", required=True, help="test split: TSV file or Parquet split")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--out", help="directory for metrics.json; none: print it")
    _common(e)

    s = sub.add_parser(
        "score", help="top-k per session of a day, published atomically", formatter_class=fmt
    )
    s.add_argument("--model", required=True, help="checkpoint file or run directory")
    s.add_argument("--sessions", required=True, help="one day of sessions (sessions/dt=D)")
    s.add_argument("--out", required=True, help="recommendations root (dt=D is published in it)")
    s.add_argument("--date", required=True, help="the day D (YYYY-MM-DD)")
    s.add_argument("--k", type=int, default=20, help="recommendations per session")
    s.add_argument(
        "--exclude-seen",
        action="store_true",
        help="rank the session's own items last (off: repeats can be recommended)",
    )
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--batch-size", type=int, default=2048, help="sessions per batch")
    s.add_argument(
        "--no-publish",
        action="store_true",
        help="score and check into an unreferenced version directory only (printed as "
        "'staged'); the nightly DAG validates and publishes it in later tasks",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads; none: all")

    b = sub.add_parser("baselines", help="POP, S-POP and Item-KNN", formatter_class=fmt)
    b.add_argument("--train", required=True, help="training split: TSV file or Parquet split")
    b.add_argument("--test", required=True, help="test split")
    b.add_argument(
        "--items", help="item index table; none: the items/ table beside a Parquet split"
    )
    b.add_argument("--out", help="directory for metrics.json; none: print it")
    _common(b)
    return parser


class RunDir:
    """Write into `<out>.staging`, then replace `<out>` with it in two renames."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.stage = self.out.with_name(f".{self.out.name}.staging-{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.stage, self.out)
        shutil.rmtree(old, ignore_errors=True)


def load_split(path: str, item_map: ItemMap, name: str) -> SessionData:
    return build_sessions(read_events(path), item_map, name)


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
    for name in BASELINES:
        t0 = time.perf_counter()
        res = evaluate_baseline(name, train, test, item_map.support, cutoffs, ties, knn=knn)
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
def cmd_train(args) -> int:
    if args.resume:
        resumed = ckpt.Checkpoint(args.resume)
        cfg = resumed.config
    else:
        resumed = None
        cfg = Config.from_params(args.params)
    if args.config:
        cfg = cfg.with_file(args.config)
    cfg = cfg.with_overrides(args.overrides)
    if args.device:
        cfg = cfg.with_overrides([f"device={args.device}"])
    train_frame = read_events(args.train)
    item_map = load_item_map(train_frame, args.train, args.items)
    train = build_sessions(train_frame, item_map, "train")
    test = load_split(args.test, item_map, "test") if args.test else None
    if resumed is not None:
        resumed.check_items(item_map, args.train)
        device = resolve_device(cfg.device)
        trainer = Trainer(
            cfg,
            item_map,
            model=resumed.model(device, cfg),
            optimizer=resumed.optimizer(cfg, device),
            epochs_done=resumed.epochs_done,
        )
        log.info("resuming from %s after epoch %d", resumed.path, resumed.epochs_done)
    else:
        trainer = Trainer(cfg, item_map)
    log.info("training on %s: %s", trainer.device, json.dumps(cfg.to_dict()))
    with RunDir(args.out) as stage:
        t0 = time.perf_counter()
        history = trainer.fit(train, args.progress)
        train_seconds = time.perf_counter() - t0
        ckpt.save(
            stage / ckpt.FILENAME, trainer.model, item_map, trainer.optimizer, trainer.epochs_done
        )
        (stage / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        item_map.to_frame().to_parquet(stage / "items.parquet", index=False)
        rates = [e.events_per_second for e in history]
        later = rates[1:] or rates
        metrics: dict = {
            "events_per_second": statistics.median(later) if later else None,
            "seconds_per_epoch": statistics.median([e.seconds for e in history[1:] or history])
            if history
            else None,
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
            "device": str(trainer.device),
            "n_items": len(item_map),
            "item_fingerprint": item_map.fingerprint,
            "ties": args.ties,
            "data": {
                "train": str(args.train),
                "test": str(args.test),
                **data_summary("train", train),
            },
        }
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
    test = load_split(args.test, loaded.item_map, "test")
    result = evaluate_model(model, test, args.cutoffs, args.ties)
    _log_metrics("GRU4Rec", result)
    result.update(
        {
            "ties": args.ties,
            "model": str(loaded.path),
            "test": str(args.test),
            "n_items": len(loaded.item_map),
            **data_summary("test", test),
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
    from gru4rec.score import score_day, stage_day

    try:
        day = str(dt.date.fromisoformat(args.date))
    except ValueError:
        raise ConfigError(f"--date: expected YYYY-MM-DD, found {args.date!r}") from None
    summary = (stage_day if args.no_publish else score_day)(
        args.model,
        args.sessions,
        args.out,
        day,
        args.k,
        args.exclude_seen,
        args.device,
        args.batch_size,
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
    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2
    except FloatingPointError as exc:
        log.error("training diverged: %s", exc)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
