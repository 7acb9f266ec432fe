"""The DAG's params: each is one field of a component's settings (jobs/common/settings.py).

A param's default is its field's default, overridable per deployment by `GRU4REC_<NAME>` in
the environment, and per run by the run's conf. `Night.from_params` builds every component's
settings once and so validates everything a run was given before any task starts work.
Importable while the DAG is parsed: nothing heavy, no I/O.

A run's conf is untrusted (anyone allowed to trigger the DAG writes it):
- `spark_master` is the deployment's alone (`GRU4REC_SPARK_MASTER`);
- `spark_conf` may only name the sizing and tuning settings of `RUN_SPARK_CONF_KEYS` (plus any
  the deployment lists in `GRU4REC_RUN_SPARK_CONF_KEYS`), with plain values; nothing that
  loads code, names a class, a path or a JVM option;
- `lake`, `quality_root` and `raw_input` must lie under the deployment's roots
  (`GRU4REC_ROOTS`, a JSON list; default: the deployment's lake, quality root and raw
  delivery directory);
- the deployment's own Spark settings (`GRU4REC_SPARK_CONF`, where credentials belong) are
  never a param default (the UI shows those), never on a command line and never logged: they
  reach spark-submit in a private properties file (`jobs.nightly.commands`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from dataclasses import dataclass

from jobs.common.errors import ConfigError
from jobs.common.lake import Lake, default_root, normalize_root, raw_template
from jobs.common.settings import (
    DatasetSettings,
    PopularitySettings,
    PromotionSettings,
    PublishSettings,
    QualityThresholds,
    ScoringSettings,
    SessionizeSettings,
    SparkSettings,
    TrainSettings,
)

ENV_PREFIX = "GRU4REC_"

# Params only the deployment sets; a run's conf that changes one is refused.
DEPLOYMENT_ONLY = ("spark_master",)
# Params whose deployment value is a secret-bearing setting: never shown as a Param default.
DEPLOYMENT_SECRET = ("spark_conf",)

# Spark settings a run's conf may change: sizing and tuning. Not here, so refused per run:
# anything that loads code or classes (spark.jars*, spark.*.extraClassPath, spark.plugins,
# spark.sql.extensions, spark.sql.catalog.*), starts processes (spark.pyspark.python,
# spark.*.extraJavaOptions), names paths or credentials (spark.hadoop.*, spark.local.dir).
RUN_SPARK_CONF_KEYS = frozenset(
    {
        "spark.sql.shuffle.partitions",
        "spark.default.parallelism",
        "spark.sql.adaptive.enabled",
        "spark.sql.adaptive.coalescePartitions.enabled",
        "spark.sql.adaptive.advisoryPartitionSizeInBytes",
        "spark.sql.adaptive.skewJoin.enabled",
        "spark.sql.autoBroadcastJoinThreshold",
        "spark.sql.files.maxPartitionBytes",
        "spark.sql.parquet.compression.codec",
        "spark.executor.memory",
        "spark.executor.memoryOverhead",
        "spark.executor.cores",
        "spark.executor.instances",
        "spark.cores.max",
        "spark.task.cpus",
        "spark.memory.fraction",
        "spark.memory.storageFraction",
        "spark.dynamicAllocation.enabled",
        "spark.dynamicAllocation.minExecutors",
        "spark.dynamicAllocation.maxExecutors",
        "spark.network.timeout",
    }
)
# A run's Spark value: a number, size, duration, boolean or codec name; no spaces or options.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")


@dataclass(frozen=True)
class Spec:
    """One param: the settings component and field it sets, and what it means."""

    component: str  # attribute of Night ("" for the run's own fields)
    field: str
    description: str
    default: object


def _spec(component: str, cls, name: str, description: str, field: str | None = None) -> Spec:
    f = {x.name: x for x in dataclasses.fields(cls)}[field or name]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return Spec(component, field or name, description, default)


PARAMS: dict[str, Spec] = {
    "lake": Spec("", "lake", "lake root (path or URI); '' = var/lake", ""),
    "quality_root": Spec("", "quality_root", "quality reports; '' = <lake>/quality", ""),
    "raw_input": Spec(
        "", "raw_input", "raw delivery; {ds} = the date, {lake} = the lake root",
        raw_template(),
    ),
    "source_preset": Spec(
        "", "source_preset", "rsc15, yoochoose, taobao, trivago, synthetic, or '' with a mapping",
        "synthetic",
    ),
    "column_mapping": Spec(
        "", "column_mapping", "SourceMapping keys (user_col, item_col, ts_col, ts_unit, ...); "
        "win over the preset", {},
    ),
    "accepted_days": Spec(
        "", "accepted_days", "days an operator accepts although their raw or sessions gate "
        "failed (YYYY-MM-DD list); recorded in the run report", [],
    ),
    "spark_master": _spec("spark", SparkSettings, "spark_master", "Spark master URL", "master"),
    "driver_memory": _spec("spark", SparkSettings, "driver_memory", "Spark driver heap (JVM size)"),
    "spark_conf": _spec("spark", SparkSettings, "spark_conf", "extra Spark settings", "conf"),
    "gap_seconds": _spec(
        "sessionize", SessionizeSettings, "gap_seconds", "inactivity gap that ends a session"
    ),
    "lookback_days": _spec(
        "sessionize", SessionizeSettings, "lookback_days", "days read before D for continuity"
    ),
    "remove_repeats": _spec(
        "sessionize", SessionizeSettings, "remove_repeats", "collapse immediate repeats"
    ),
    "max_events_per_user_day": _spec(
        "sessionize", SessionizeSettings, "max_events_per_user_day", "bot cap a user-day; 0 off"
    ),
    "window_days": _spec("datasets", DatasetSettings, "window_days", "training window"),
    "test_days": _spec("datasets", DatasetSettings, "test_days", "days of the test split"),
    "valid_days": _spec("datasets", DatasetSettings, "valid_days", "days of the validation split"),
    "min_session_length": _spec(
        "datasets", DatasetSettings, "min_session_length", "shorter sessions are dropped"
    ),
    "min_item_support": _spec(
        "datasets", DatasetSettings, "min_item_support", "rarer items are dropped"
    ),
    "alpha": _spec(
        "popularity", PopularitySettings, "alpha", "negative-sampling exponent (training uses it)"
    ),
    "model_params": _spec("train", TrainSettings, "model_params", "GRU4Rec parameter set"),
    "epochs": _spec("train", TrainSettings, "epochs", "training epochs"),
    "model_overrides": _spec(
        "train", TrainSettings, "model_overrides", "extra key=value GRU4Rec parameters"
    ),
    "device": _spec("train", TrainSettings, "device", "torch device: auto, cpu, cuda, cuda:N"),
    "select_epochs": _spec(
        "train", TrainSettings, "select_epochs", "a full training picks its epochs (<= epochs) "
        "on the valid split (trained on train_tr), then trains them on train",
    ),
    "refresh_before_scoring": _spec(
        "train", TrainSettings, "refresh_before_scoring", "after the gate, update the serving "
        "model on D's sessions (a warm start) and score D with it", "refresh",
    ),
    "train_mode": _spec(
        "train", TrainSettings, "train_mode", "full (from scratch on the window) or incremental "
        "(warm-start the serving model on the sessions it has not seen)", "mode",
    ),
    "full_retrain_every": _spec(
        "train", TrainSettings, "full_retrain_every", "incremental: a full retrain every N "
        "nights (1 = always full)", "full_every",
    ),
    "incremental_epochs": _spec(
        "train", TrainSettings, "incremental_epochs", "epochs of a warm start (an incremental "
        "night, the refresh) on the sessions the model has not seen", "warm_epochs",
    ),
    "k": _spec("scoring", ScoringSettings, "k", "recommendations per session"),
    "promotion_margin": _spec(
        "promotion", PromotionSettings, "promotion_margin", "relative Recall@k the new model "
        "may lose to the live one", "margin",
    ),
    "baseline_margin": _spec(
        "promotion", PromotionSettings, "baseline_margin", "relative Recall@k the new model "
        "may lose to the best baseline (POP, S-POP, Item-KNN, V-SKNN, STAN) on the same test "
        "split; 1 = no floor",
    ),
    "publish_grace_hours": _spec(
        "publish", PublishSettings, "publish_grace_hours", "hours a replaced recommendations "
        "version stays readable before cleanup collects it", "grace_hours",
    ),
    "quality_thresholds": Spec(
        "thresholds", "", "QualityThresholds fields (e.g. max_quarantine_share)", {}
    ),
}  # fmt: skip

_COMPONENTS = {
    "spark": SparkSettings,
    "sessionize": SessionizeSettings,
    "datasets": DatasetSettings,
    "popularity": PopularitySettings,
    "train": TrainSettings,
    "scoring": ScoringSettings,
    "promotion": PromotionSettings,
    "publish": PublishSettings,
}


def _from_env(name: str, default):
    """`GRU4REC_<NAME>` parsed as the default's type (JSON for objects and lists)."""
    raw = os.environ.get(ENV_PREFIX + name.upper())
    if raw is None or raw == "":
        return default
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, dict | list | tuple):
            return json.loads(raw)
        return type(default)(raw)
    except (ValueError, TypeError) as exc:
        kind = "JSON" if isinstance(default, dict | list | tuple) else type(default).__name__
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}: expected {kind}, found {raw!r} ({exc})"
        ) from None


def default_params() -> dict:
    """Every param with the default this deployment gives it (settings default or env); a
    secret-bearing deployment setting keeps its plain default (the UI shows defaults)."""
    return {
        name: spec.default if name in DEPLOYMENT_SECRET else _from_env(name, spec.default)
        for name, spec in PARAMS.items()
    }


def run_spark_conf_keys() -> frozenset[str]:
    """The Spark settings a run may change: ours plus the deployment's additions."""
    extra = _from_env("run_spark_conf_keys", [])
    if not isinstance(extra, list):
        raise ConfigError(f"{ENV_PREFIX}RUN_SPARK_CONF_KEYS: expected a JSON list of keys")
    return RUN_SPARK_CONF_KEYS | {str(k) for k in extra}


def _check_run_spark_conf(conf) -> None:
    if not isinstance(conf, dict):
        return  # SparkSettings names the type error
    allowed = run_spark_conf_keys()
    refused = sorted(k for k in conf if k not in allowed)
    if "spark.driver.memory" in refused:
        raise ConfigError(
            "spark_conf: spark.driver.memory is a launch-time setting: use the driver_memory param"
        )
    if refused:
        raise ConfigError(
            f"spark_conf: a run may only change {sorted(allowed)}; found {refused} (set other "
            f"Spark settings for the deployment in {ENV_PREFIX}SPARK_CONF)"
        )
    bad = sorted(k for k, v in conf.items() if not _PLAIN_VALUE.fullmatch(str(v)))
    if bad:
        raise ConfigError(
            f"spark_conf: expected plain values (numbers, sizes, durations, booleans: "
            f"{_PLAIN_VALUE.pattern}) for {bad}"
        )


def deployment_roots() -> tuple[str, ...]:
    """Where a run's paths may point: `GRU4REC_ROOTS` (JSON list), else the deployment's
    lake, quality root and the directory of its raw delivery template."""
    roots = _from_env("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise ConfigError(f"{ENV_PREFIX}ROOTS: expected a JSON list of paths or URIs")
    if not roots:
        lake = Lake.resolved(_from_env("lake", "") or default_root(), _from_env("quality_root", ""))
        raw = lake.expand(_from_env("raw_input", raw_template()))
        roots = [lake.root, lake.quality_root, _fixed_prefix(raw)]
    return tuple(sorted({normalize_root(r) for r in roots}))


def _fixed_prefix(template: str) -> str:
    """The directory of a path template before its first `{...}` token (the path itself
    when it has none): `/data/raw/dt={ds}` -> `/data/raw`."""
    if "{" not in template:
        return template
    return template.split("{", 1)[0].rsplit("/", 1)[0] or "/"


def under_roots(path: str, roots) -> bool:
    """Whether `path` (local or URI) is one of `roots` or inside one; no `..` segments."""
    if ".." in path.replace("\\", "/").split("/"):
        return False
    target = normalize_root(_fixed_prefix(path))
    for root in roots:
        if "://" in root or "://" in target:
            if target == root or target.startswith(root.rstrip("/") + "/"):
                return True
        elif os.path.commonpath([root, target]) == root:
            return True
    return False


def _check_paths(lake: Lake, raw_input: str) -> None:
    roots = deployment_roots()
    for name, path in (
        ("lake", lake.root),
        ("quality_root", lake.quality_root),
        ("raw_input", raw_input),
    ):
        if not under_roots(path, roots):
            raise ConfigError(
                f"{name}: expected a path under the deployment's roots {list(roots)} "
                f"({ENV_PREFIX}ROOTS), found {path!r}"
            )


def _check_deployment_only(params: dict, defaults: dict) -> None:
    for name in DEPLOYMENT_ONLY:
        value = params.get(name)
        if value is not None and value != defaults[name]:
            raise ConfigError(
                f"{name}: set by the deployment ({ENV_PREFIX}{name.upper()}="
                f"{defaults[name]!r}), not by a run; found {value!r}"
            )


@dataclass(frozen=True)
class Night:
    """One night's configuration: the params resolved and validated for day D."""

    day: str
    lake: Lake
    raw_input: str
    source_preset: str
    column_mapping: dict
    accepted_days: tuple[str, ...]
    spark: SparkSettings
    sessionize: SessionizeSettings
    datasets: DatasetSettings
    popularity: PopularitySettings
    train: TrainSettings
    scoring: ScoringSettings
    promotion: PromotionSettings
    publish: PublishSettings
    thresholds: QualityThresholds

    @classmethod
    def from_params(cls, params: dict, day: str | dt.date) -> Night:
        """Defaults, then `params` (a run's conf; None values keep the default)."""
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ConfigError(f"unknown params {unknown}: expected some of {sorted(PARAMS)}")
        defaults = default_params()
        _check_deployment_only(params, defaults)
        p = {**defaults, **{k: v for k, v in params.items() if v is not None}}
        _check_run_spark_conf(p["spark_conf"])
        try:
            day = str(dt.date.fromisoformat(str(day)))
        except ValueError:
            raise ConfigError(f"date: expected YYYY-MM-DD, found {day!r}") from None
        lake = Lake.resolved(p["lake"] or default_root(), p["quality_root"])
        fields: dict[str, dict] = {c: {} for c in _COMPONENTS}
        for name, spec in PARAMS.items():
            if spec.component in fields:
                fields[spec.component][spec.field] = p[name]
        _check_mapping(p["source_preset"], p["column_mapping"])
        _check_paths(lake, lake.expand(p["raw_input"]))
        return cls(
            day=day,
            lake=lake,
            raw_input=lake.expand(p["raw_input"]),
            source_preset=p["source_preset"],
            column_mapping=dict(p["column_mapping"]),
            accepted_days=_check_days(p["accepted_days"]),
            thresholds=QualityThresholds.from_dict(p["quality_thresholds"]),
            **{c: _COMPONENTS[c](**values) for c, values in fields.items()},
        )

    @property
    def metric(self) -> str:
        """The promotion gate's metric: Recall at the k served."""
        return self.promotion.metric(self.scoring.k)


def _check_days(days) -> tuple[str, ...]:
    """The accepted days as sorted YYYY-MM-DD strings."""
    if not isinstance(days, list | tuple):
        raise ConfigError(f"accepted_days: expected a list of YYYY-MM-DD dates, found {days!r}")
    try:
        return tuple(sorted({str(dt.date.fromisoformat(str(d))) for d in days}))
    except ValueError:
        raise ConfigError(
            f"accepted_days: expected a list of YYYY-MM-DD dates, found {days!r}"
        ) from None


def _check_mapping(preset: str, mapping: dict) -> None:
    """The preset and column mapping build a valid SourceMapping (what ingest will use)."""
    from jobs.sources import load_mapping

    if not isinstance(mapping, dict):
        raise ConfigError(f"column_mapping: expected an object, found {mapping!r}")
    try:
        load_mapping(preset or None, None).override(**mapping)
    except (TypeError, ValueError) as exc:  # e.g. a number where a date string belongs
        raise ConfigError(f"column_mapping: {exc} (found {mapping!r})") from None


def json_type(value) -> str:
    """The JSON-schema type of a param's default (what the Airflow UI's form offers)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "string"
