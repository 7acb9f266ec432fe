"""The command line of `python -m gru4rec`: one sub-parser per command."""

from __future__ import annotations

import argparse

from gru4rec.config import AUTO_DEVICE, PARAM_SETS, TIE_MODES


def _at_least(low: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, found {value!r}")
        return n

    return parse


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


LOG_LEVELS = ["DEBUG", "INFO", "WARNING"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """An option's default is shown once, and only when it says something: never on a
    required option, never "None" or "False", never when the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (
            action.required
            or action.default is None
            or action.default is False
            or action.default in ([], (), "", argparse.SUPPRESS)
            or "default" in text
            or "none:" in text
            or not action.option_strings
        )
        return text if quiet else f"{text} (default: {action.default})".lstrip()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ties", default="conservative", choices=TIE_MODES, help="rank ties")
    p.add_argument("--cutoffs", type=_cutoffs, default=(1, 5, 10, 20), help="k for Recall/MRR@k")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; none: all")
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="how much to log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gru4rec",
        description="GRU4Rec: train, evaluate and compare with baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = HelpFormatter
    for add in (_train, _evaluate, _score, _baselines):
        add(sub, fmt)
    return parser


def _train(sub, fmt) -> None:
    t = sub.add_parser("train", help="train a model (and evaluate it)", formatter_class=fmt)
    t.add_argument("--train", required=True, help="training split: TSV file or Parquet split")
    t.add_argument("--test", help="test split to evaluate on after training")
    t.add_argument(
        "--items", help="item index table; none: the items/ table beside a Parquet split"
    )
    t.add_argument(
        "--popularity",
        help="negative-sampling weights (a popularity table: item_idx, item_id, weight, alpha); "
        "none: the popularity/ table beside a Parquet split, else support^sample_alpha",
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
    start = t.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        help="continue training from this checkpoint (file or run dir) on the same data and "
        "item index, up to n_epochs in all",
    )
    start.add_argument(
        "--warm-start",
        help="incremental training: continue this checkpoint's weights and optimizer for "
        "--warm-epochs on the sessions of --train it has not seen; the items new in them are "
        "appended to its item index",
    )
    t.add_argument(
        "--warm-epochs",
        type=_at_least(0),
        help="with --warm-start: epochs on the unseen sessions (default: n_epochs); a full "
        "training that replaces a refused warm start (--fallback-full) keeps n_epochs",
    )
    t.add_argument(
        "--support-from",
        nargs="+",
        metavar="EVENTS",
        help="with --warm-start: count a new item's events for --min-new-item-support in "
        "these (the window's session tables, tonight's included) instead of only the "
        "sessions trained, as the datasets' filter counts them over a window",
    )
    t.add_argument(
        "--min-new-item-support",
        type=_at_least(1),
        default=1,
        help="with --warm-start: an item the checkpoint does not know gets a row when the "
        "items/ table (--items, or beside --train) lists it, or with this many events among "
        "the sessions trained; the events of other new items are dropped, and counted (the "
        "pipeline passes its min_item_support)",
    )
    t.add_argument(
        "--select-epochs",
        nargs=2,
        metavar=("TRAIN_TR", "VALID"),
        help="choose the number of epochs first: train on TRAIN_TR for up to n_epochs, "
        "evaluating on VALID after each (stopping after --patience epochs without a gain), "
        "then train on --train for the best number of epochs",
    )
    t.add_argument(
        "--select-by", default="mrr@20", help="with --select-epochs: the metric to maximise"
    )
    t.add_argument(
        "--patience",
        type=int,
        default=2,
        help="with --select-epochs: stop after this many epochs without a better metric",
    )
    t.add_argument(
        "--fallback-full",
        action="store_true",
        help="with --warm-start: when the checkpoint is refused (another configuration, no "
        "recorded data range), train a full model instead and record why",
    )
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the baselines (POP, S-POP, Item-KNN, V-SKNN, STAN)",
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar; none: when stderr is a terminal",
    )
    _common(t)


def _evaluate(sub, fmt) -> None:
    e = sub.add_parser("evaluate", help="evaluate a checkpoint", formatter_class=fmt)
    e.add_argument("--model", required=True, help="checkpoint file or run directory")
    e.add_argument("--test", required=True, help="test split: TSV file or Parquet split")
    e.add_argument("--device", default=AUTO_DEVICE, help="cpu, cuda, cuda:N or auto")
    e.add_argument(
        "--known-by",
        action="append",
        default=[],
        metavar="MODEL",
        help="evaluate only on test events whose item this model knows too (repeatable): "
        "two models compared on the same events",
    )
    e.add_argument("--out", help="directory for metrics.json; none: print it")
    _common(e)


def _score(sub, fmt) -> None:
    s = sub.add_parser(
        "score", help="top-k per session: sessions Parquet in, a table out", formatter_class=fmt
    )
    s.add_argument("--model", required=True, help="checkpoint file or run directory")
    s.add_argument("--sessions", required=True, help="sessions Parquet (e.g. sessions/dt=D)")
    s.add_argument(
        "--out", required=True, help="new directory for the table (part-00000.parquet + summary)"
    )
    s.add_argument(
        "--context",
        help="earlier sessions Parquet (e.g. sessions/dt=D-1): a session of --sessions that "
        "continues one of them is scored with its earlier events too",
    )
    s.add_argument("--k", type=int, default=20, help="recommendations per session")
    s.add_argument(
        "--exclude-seen",
        action="store_true",
        help="rank the session's own items last (off: repeats can be recommended)",
    )
    s.add_argument("--device", default=AUTO_DEVICE, help="cpu, cuda, cuda:N or auto")
    s.add_argument("--batch-size", type=int, default=2048, help="sessions per batch")
    s.add_argument(
        "--max-events",
        type=int,
        default=1_000_000,
        help="events read into memory at once: the day is scored in ranges of session_id of "
        "about this many events",
    )
    s.add_argument(
        "--spill-dir",
        default=None,
        help="where a day larger than --max-events is spilled while it is scored (a copy of "
        "the day, removed at the end); default: the system's temporary directory (TMPDIR)",
    )
    s.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="how much to log")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads; none: all")


def _baselines(sub, fmt) -> None:
    b = sub.add_parser(
        "baselines", help="POP, S-POP, Item-KNN, V-SKNN and STAN", formatter_class=fmt
    )
    b.add_argument("--train", required=True, help="training split: TSV file or Parquet split")
    b.add_argument("--test", required=True, help="test split")
    b.add_argument(
        "--items", help="item index table; none: the items/ table beside a Parquet split"
    )
    b.add_argument("--out", help="directory for metrics.json; none: print it")
    _common(b)
