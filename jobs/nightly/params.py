"""The DAG's params: each is one field of a component's settings (jobs/common/settings.py).

A param's default is its field's default, overridable per deployment by `GRU4REC_<NAME>` in
the environment, and per run by the run's conf. `Night.from_params` builds every component's
settings once and so validates everything a run was given before any task starts work.
Importable while the DAG is parsed: nothing heavy, no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass

from jobs.common.errors import ConfigError
from jobs.common.lake import Lake, default_root, raw_template
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
    "k": _spec("scoring", ScoringSettings, "k", "recommendations per session"),
    "promotion_margin": _spec(
        "promotion", PromotionSettings, "promotion_margin", "relative Recall@k the new model "
        "may lose to the live one", "margin",
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
    """Every param with the default this deployment gives it (settings default or env)."""
    return {name: _from_env(name, spec.default) for name, spec in PARAMS.items()}


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
        p = {**default_params(), **{k: v for k, v in params.items() if v is not None}}
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
