"""One frozen dataclass per pipeline component: the one home of every default.

The jobs' command-line defaults, the DAG's params (and their `GRU4REC_*` environment
overrides) and the validation all come from these classes; each validates itself when built,
so a bad value fails once, where it is given, with what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

from jobs.common.errors import ConfigError


def _fail(name: str, expected: str, found) -> None:
    raise ConfigError(f"{name}: expected {expected}, found {found!r}")


def _check_int(obj, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value)


def _check_number(obj, name: str, low: float) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        _fail(name, f"a number >= {low}", value)


def deployment_spark_conf() -> dict[str, str]:
    """`GRU4REC_SPARK_CONF` (a JSON object): the deployment's own Spark settings, where
    credentials belong. Applied to every Spark application below a run's allowed settings;
    never a param default, never on a command line, never logged."""
    raw = os.environ.get("GRU4REC_SPARK_CONF") or "{}"
    try:
        conf = json.loads(raw)
    except ValueError:
        conf = None
    if not isinstance(conf, dict):
        raise ConfigError("GRU4REC_SPARK_CONF: expected a JSON object of Spark settings")
    return {str(k): str(v) for k, v in conf.items()}


@dataclass(frozen=True)
class SparkSettings:
    """Where the Spark jobs run and the launch-time settings their JVM needs."""

    master: str = "local[*]"
    # Launch-time: passed to spark-submit as --driver-memory (a session builder cannot change
    # the heap of a driver JVM that is already running).
    driver_memory: str = "4g"
    conf: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.master, str) or not self.master:
            _fail("spark_master", "a Spark master URL (local[*], spark://h:7077, ...)", self.master)
        if not re.fullmatch(r"\d+([kmgtp]b?)?", str(self.driver_memory), re.IGNORECASE):
            _fail("driver_memory", "a JVM memory size such as 4g or 1536m", self.driver_memory)
        if not isinstance(self.conf, dict):
            _fail("spark_conf", "an object of Spark settings", self.conf)
        if "spark.driver.memory" in self.conf:
            raise ConfigError(
                "spark_conf: spark.driver.memory is a launch-time setting: use driver_memory"
            )

    def submit_args(self) -> list[str]:
        """spark-submit's options for these settings."""
        args = ["--master", self.master, "--driver-memory", self.driver_memory]
        for key, value in self.conf.items():
            args += ["--conf", f"{key}={value}"]
        return args


@dataclass(frozen=True)
class SessionizeSettings:
    """The session rule and what is removed before sessions are cut."""

    gap_seconds: int = 1800  # the 30-minute inactivity rule: a longer gap starts a new session
    lookback_days: int = 1  # days read before D so a session continuing past midnight links up
    remove_repeats: bool = True  # (i, i, j) -> (i, j), as the published preprocessing does
    max_events_per_user_day: int = 10_000  # users above it are bots, dropped and counted; 0: off

    def __post_init__(self) -> None:
        _check_int(self, "gap_seconds", 1)
        _check_int(self, "lookback_days", 0)
        _check_int(self, "max_events_per_user_day", 0)
        if not isinstance(self.remove_repeats, bool):
            _fail("remove_repeats", "true or false", self.remove_repeats)


@dataclass(frozen=True)
class DatasetSettings:
    """What the filter and the time split keep; defaults are the published benchmarks'."""

    window_days: int = 30
    test_days: int = 1
    valid_days: int = 1
    min_session_length: int = 2
    min_item_support: int = 5
    max_passes: int = 100

    def __post_init__(self) -> None:
        for name in ("test_days", "valid_days", "min_session_length", "min_item_support"):
            _check_int(self, name, 1)
        _check_int(self, "max_passes", 1)
        _check_int(self, "window_days", 1)
        if self.window_days <= self.test_days + self.valid_days:
            raise ConfigError(
                f"window_days: expected more than test_days + valid_days "
                f"({self.test_days} + {self.valid_days}) to leave days to train on, "
                f"found {self.window_days}"
            )


@dataclass(frozen=True)
class PopularitySettings:
    """The negative-sampling distribution the popularity table publishes and training uses."""

    alpha: float = 0.5  # weight = support^alpha: 0 uniform, 1 proportional to popularity

    def __post_init__(self) -> None:
        _check_number(self, "alpha", 0.0)


@dataclass(frozen=True)
class TrainSettings:
    """Which GRU4Rec parameter set trains tonight, for how long, on which device."""

    model_params: str = "rsc15"
    epochs: int = 10
    model_overrides: tuple = ()  # extra `key=value` GRU4Rec parameters
    device: str = "auto"  # auto: a CUDA GPU when torch sees one, else the CPU
    # full: every night from scratch on the window; incremental: warm-start the serving model
    # on the sessions it has not seen, `warm_epochs` epochs, with a full retrain every
    # `full_every` nights (and whenever there is nothing to warm-start from)
    mode: str = "full"
    full_every: int = 7
    # epochs of every warm start (an incremental night, the refresh) on its new sessions. On
    # the Taobao sample's chains of nightly refreshes (benchmarks/warm_epochs_sweep.py, Recall@20
    # of the refreshed model on the next day's test points it shares with a full retraining,
    # relative to that full retraining): 2 epochs 0.865x, 3 0.996x, 4 1.055x, 5 1.054x, 7
    # 1.089x, 10 1.092x; 2 epochs fall further behind every night. 5 keeps a refresh at about
    # a sixth of a full training's time (benchmarks/RESULTS.md)
    warm_epochs: int = 5
    # a full training first chooses its number of epochs (at most `epochs`) on the valid split
    # (trained on train_tr, by the gate's metric), then trains that many on train
    select_epochs: bool = True
    # before scoring D, the serving model is warm-started on D's sessions (`warm_epochs`
    # epochs), so the model that scores D has seen D and its new items
    refresh: bool = True

    def __post_init__(self) -> None:
        _check_int(self, "epochs", 1)
        _check_int(self, "full_every", 1)
        _check_int(self, "warm_epochs", 1)
        if self.mode not in ("full", "incremental"):
            _fail("train_mode", "full or incremental", self.mode)
        object.__setattr__(self, "model_overrides", tuple(self.model_overrides))
        for item in self.model_overrides:
            if not isinstance(item, str) or "=" not in item:
                _fail("model_overrides", "a list of key=value strings", item)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            _fail("device", "auto, cpu, cuda or cuda:N", self.device)


@dataclass(frozen=True)
class ScoringSettings:
    """How many recommendations each session gets."""

    k: int = 20

    def __post_init__(self) -> None:
        _check_int(self, "k", 1)


@dataclass(frozen=True)
class PublishSettings:
    """How long a replaced version of a published table stays readable."""

    grace_hours: float = 24.0  # at least one night: readers on the old version finish

    def __post_init__(self) -> None:
        _check_number(self, "grace_hours", 0)


@dataclass(frozen=True)
class PromotionSettings:
    """The promotion gate: how much Recall@k tonight's model may lose to the live model, and
    to the best baseline evaluated on the same test split (the floor)."""

    margin: float = 0.05  # relative: 0.05 = the candidate may be up to 5% worse
    baseline_margin: float = 0.05  # relative to the best baseline; 1 = no floor

    def __post_init__(self) -> None:
        for name, value, high, shown in (
            ("promotion_margin", self.margin, 1, "[0, 1)"),
            ("baseline_margin", self.baseline_margin, 1.0 + 1e-12, "[0, 1] (1 = no floor)"),
        ):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not 0 <= value < high:
                _fail(name, f"a fraction in {shown}", value)

    @staticmethod
    def metric(k: int) -> str:
        """The gate's metric follows the number of recommendations served."""
        return f"recall@{k}"


@dataclass(frozen=True)
class QualityThresholds:
    """Tunable limits of the quality suites; defaults suit clickstreams."""

    max_quarantine_share: float = 0.05
    min_events: int = 1
    min_volume_ratio: float = 0.2  # events of D vs the previous day's
    max_id_length: int = 256
    max_session_events: int = 1000
    max_long_session_share: float = 0.001  # share of sessions allowed above max_session_events
    min_multi_event_share: float = 0.05  # sessions with >= 2 events
    min_test_coverage: float = 0.25  # share of test-window events whose item train knows

    @classmethod
    def from_dict(cls, values: dict | None) -> QualityThresholds:
        return from_dict(cls, values, "quality thresholds")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(cls, values: dict | None, what: str):
    """`cls(**values)`, refusing names it does not have (naming the ones it has)."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{what}: expected an object, found {values!r}")
    values = dict(values or {})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}: expected some of {known}")
    return cls(**values)
