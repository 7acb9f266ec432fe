"""THE lake layout: every path of DESIGN.md's lake, in one place, for local paths and URIs.

Jobs, steps, reports and tests ask a `Lake` for paths; nobody else writes `dt=` or `run=`.
Pure Python (no Spark, no I/O), so the DAG can build paths while it is parsed.

    raw/dt=D/                      default delivery of day D (`raw_template`)
    events/dt=D/  quarantine/dt=D/  sessions/dt=D/      (+ `<dataset>/_summaries/<key>.json`)
    datasets/run=D/{train,train_tr,valid,test,items,popularity}/
    models/run=D/v=<id>/  models/run=D/promotion.json  models/live.json
    recommendations/dt=D -> recommendations/_versions/dt=D/<version>/
    quality/dt=D/                  suite results, Data Docs, run report (`quality_root`)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATE_TOKEN = "{ds}"
LAKE_TOKEN = "{lake}"
DT = "dt"  # the partition column of the daily datasets (`dt=YYYY-MM-DD`)
SPLITS = ("train", "train_tr", "valid", "test")
MODEL_VERSION = "v"  # models/run=D/v=<id>/: one immutable version per training run of D


def raw_template() -> str:
    """The default delivery of day D, relative to the lake root: `{lake}/raw/dt={ds}`."""
    return f"{LAKE_TOKEN}/raw/{dt_partition(DATE_TOKEN)}"


def default_root() -> str:
    """The lake root when none is given: `GRU4REC_LAKE`, else `<project>/var/lake`."""
    return os.environ.get("GRU4REC_LAKE") or str(PROJECT_ROOT / "var" / "lake")


def normalize_root(root: str) -> str:
    """A URI stays as given (without a trailing slash); a local path becomes absolute."""
    root = str(root).rstrip("/") or "/"
    return root if "://" in root else str(Path(root).expanduser().resolve())


def dt_partition(day) -> str:
    return f"{DT}={day}"


def run_partition(day) -> str:
    return f"run={day}"


def date_of_partition(name: str) -> dt.date | None:
    """The date in `dt=D` / `run=D`, None for any other name."""
    key, sep, value = name.partition("=")
    if not sep or key not in ("dt", "run"):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Lake:
    """Paths under one lake root; `quality_root` defaults to `<root>/quality`."""

    root: str
    quality_root: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root).rstrip("/") or "/")
        quality = str(self.quality_root).rstrip("/") if self.quality_root else self.path("quality")
        object.__setattr__(self, "quality_root", quality)

    @classmethod
    def resolved(cls, root: str, quality_root: str = "") -> Lake:
        """A lake whose local roots are absolute (what the DAG passes to every process)."""
        return cls(normalize_root(root), normalize_root(quality_root) if quality_root else "")

    @property
    def is_local(self) -> bool:
        return "://" not in self.root and "://" not in self.quality_root

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- raw deliveries, events, quarantine, sessions ---------------------------------------
    def expand(self, template: str) -> str:
        """A path template with `{lake}` replaced by the root (`{ds}` stays for the day)."""
        return str(template).replace(LAKE_TOKEN, self.root)

    @property
    def events(self) -> str:
        return self.path("events")

    def events_day(self, day) -> str:
        return self.path("events", dt_partition(day))

    @property
    def quarantine(self) -> str:
        return self.path("quarantine")

    def quarantine_day(self, day) -> str:
        return self.path("quarantine", dt_partition(day))

    @property
    def sessions(self) -> str:
        return self.path("sessions")

    def sessions_day(self, day) -> str:
        return self.path("sessions", dt_partition(day))

    @staticmethod
    def summary(dataset_root: str, key) -> str:
        """A job's JSON summary beside its output: `<dataset>/_summaries/<key>.json`."""
        return f"{dataset_root.rstrip('/')}/_summaries/{key}.json"

    # -- datasets of a run ------------------------------------------------------------------
    def delivery_record(self, day) -> str:
        """What ingest last ingested for `day`: the delivery's fingerprint and an ingest id."""
        return self.summary(self.events, f"{day}.delivery")

    @property
    def datasets(self) -> str:
        return self.path("datasets")

    def datasets_run(self, day) -> str:
        return self.path("datasets", run_partition(day))

    def split(self, day, name: str) -> str:
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, found {name!r}")
        return f"{self.datasets_run(day)}/{name}"

    def items(self, day) -> str:
        return f"{self.datasets_run(day)}/items"

    def popularity(self, day) -> str:
        return f"{self.datasets_run(day)}/popularity"

    def datasets_summary(self, day) -> str:
        return self.summary(self.datasets, day)

    def popularity_summary(self, day) -> str:
        return self.summary(self.datasets, f"{day}.popularity")

    # -- models -----------------------------------------------------------------------------
    @property
    def models(self) -> str:
        return self.path("models")

    def model_run(self, day) -> str:
        """The date's model directory: its immutable versions (`v=<id>/`) and its decision."""
        return self.path("models", run_partition(day))

    def model_version(self, day, version: str) -> str:
        return f"{self.model_run(day)}/{MODEL_VERSION}={version}"

    def new_model_version(self, day, prefix: str = "") -> str:
        """A fresh, unused version directory of D's model (not created: training creates it
        whole). Ids sort by creation time: `20261202T130501Z-1a2b3c` (`prefix` first: the
        serving model refreshed on D is `fresh-<id>`, never a candidate of D)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return self.model_version(day, f"{prefix}{stamp}-{uuid.uuid4().hex[:6]}")

    def refresh_record(self, day) -> str:
        """Which model scores D when the serving model was refreshed on D's sessions."""
        return f"{self.model_run(day)}/refresh.json"

    def model_named(self, name: str) -> str:
        """A model directory by the name promotion records give it: `run=D/v=<id>` (an
        immutable version), or `run=D` (a lake written before models were versioned)."""
        run, _, version = name.partition("/")
        ok = date_of_partition(run) is not None and (
            not version or re.fullmatch(rf"{MODEL_VERSION}=[0-9A-Za-z-]{{1,64}}", version)
        )
        if not ok:
            raise ValueError(f"model name: expected run=YYYY-MM-DD/v=<id>, found {name!r}")
        return self.path("models", name)

    def model_name(self, path: str) -> str:
        """The record name of a model directory of this lake (inverse of `model_named`)."""
        rel = os.path.relpath(str(path), self.models) if "://" not in str(path) else ""
        self.model_named(rel)  # validates: refuses a path outside models/
        return rel

    @property
    def live_pointer(self) -> str:
        return self.path("models", "live.json")

    # -- recommendations --------------------------------------------------------------------
    @property
    def recommendations(self) -> str:
        return self.path("recommendations")

    def recommendations_day(self, day) -> str:
        """The published table of D: a link to one immutable version."""
        return self.path("recommendations", dt_partition(day))

    def recommendations_versions(self, day) -> str:
        return self.path("recommendations", "_versions", dt_partition(day))

    # -- quality and reports ----------------------------------------------------------------
    def quality_day(self, day) -> str:
        return f"{self.quality_root}/{dt_partition(day)}"

    def suite_result(self, day, suite: str) -> str:
        return f"{self.quality_day(day)}/{suite}.json"

    def data_docs(self, day) -> str:
        return f"{self.quality_day(day)}/data_docs/index.html"

    def run_report(self, day) -> str:
        return f"{self.quality_day(day)}/report.html"

    def run_state(self, day) -> str:
        return f"{self.quality_day(day)}/run.json"

    def promotion_record(self, day) -> str:
        return f"{self.quality_day(day)}/promotion.json"

    def publish_record(self, day) -> str:
        return f"{self.quality_day(day)}/publish.json"
