"""gru4rec_nightly: raw clicks -> quality-checked sessions -> GRU4Rec -> published top-k.

Orchestration only: each task starts one process built by `jobs.nightly` (spark-submit for the
Spark stages, the gru4rec CLI for training and scoring). No heavy import, connection or
Variable look-up happens while this file is parsed.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, CronTriggerTimetable, Metadata, Param, dag, task

from jobs.nightly import DataFailure, Nightly, default_params

LAKE = default_params()["lake"]
_URI = LAKE if "://" in LAKE else f"file://{LAKE}"
SESSIONS = Asset(name="gru4rec_sessions", uri=f"{_URI}/sessions")
MODEL = Asset(name="gru4rec_model", uri=f"{_URI}/models")
RECOMMENDATIONS = Asset(name="gru4rec_recommendations", uri=f"{_URI}/recommendations")

# Pools keep a small machine from running two Spark applications or two torch processes at
# once; a deployment sizes them (`airflow pools set`). The train task also goes to a queue that
# only GPU workers consume (CeleryExecutor; the LocalExecutor ignores queues).
SPARK_POOL = os.environ.get("GRU4REC_SPARK_POOL", "spark")
GPU_POOL = os.environ.get("GRU4REC_GPU_POOL", "gpu")
GPU_QUEUE = os.environ.get("GRU4REC_GPU_QUEUE", "gpu")
# KubernetesExecutor: a pod template requesting nvidia.com/gpu for the train task.
_GPU_TEMPLATE = os.environ.get("GRU4REC_GPU_POD_TEMPLATE")
TRAIN_EXECUTOR = {"executor_config": {"pod_template_file": _GPU_TEMPLATE}} if _GPU_TEMPLATE else {}

DOC = """
### GRU4Rec nightly

Processes **the previous day** D (the data interval's start) of the raw clickstream and publishes
each of D's sessions' top-k next-item recommendations to `recommendations/dt=D/`.

| task | does | on failure |
|---|---|---|
| ingest | Spark: raw delivery of D (and never-ingested days of the window) -> `events/`, `quarantine/` | retried |
| validate_raw | GX suite `raw_events` (nulls, id formats, timestamps on D, quarantine share, volume) | **fails fast** |
| sessionize | Spark: 30-minute sessions of D -> `sessions/dt=D` | retried |
| validate_sessions | GX suite `sessions` (ids, positions, session length distribution) | **fails fast** |
| build_datasets | Spark: filter + time split of the training window -> `datasets/run=D` | retried |
| popularity | Spark: item index + sampling weights | retried |
| validate_datasets | GX suites `datasets` (coverage, no leakage) and `item_index` | **fails fast** |
| train | GRU4Rec on the `gpu` queue/pool (CPU when no GPU) -> `models/run=D` | retried |
| evaluate | metrics vs baselines; **promotion gate** vs the live model on tonight's test | retried |
| score | top-k per session of D with the serving model, staged (not visible) | retried |
| validate_recommendations | GX suite `recommendations` on the staged table | **fails fast** |
| publish | atomic swap of `recommendations/dt=D` | retried |

*Fails fast*: a data-quality failure fails the task without retries, names the failing
expectations in the log and stops the run before anything is published; the previous
recommendations stay as they were. Reports: `quality/dt=D/report.html` (run report) and
`quality/dt=D/data_docs/index.html` (Great Expectations Data Docs).

Every task is idempotent per date: rerun or backfill any date range
(`airflow backfill create --dag-id gru4rec_nightly --from-date ... --to-date ...`).
Params (lake, source preset or column mapping, window, epochs, Spark master, device, promotion
margin, ...) default from `GRU4REC_*` environment variables; see the project README.
"""


def _params() -> dict:
    d = default_params()
    return {
        "lake": Param(d["lake"], type="string", description="lake root (path or URI)"),
        "quality_root": Param(
            d["quality_root"], type="string", description="quality reports; '' = <lake>/quality"
        ),
        "raw_input": Param(
            d["raw_input"],
            type="string",
            description="raw delivery; {ds} = the date, {lake} = the lake root",
        ),
        "source_preset": Param(
            d["source_preset"],
            type="string",
            description="rsc15, yoochoose, taobao, trivago, synthetic, or '' with a mapping",
        ),
        "column_mapping": Param(
            d["column_mapping"],
            type="object",
            description="SourceMapping keys (user_col, item_col, ts_col, ts_unit, ...); "
            "wins over the preset",
        ),
        "window_days": Param(d["window_days"], type="integer", minimum=2),
        "test_days": Param(d["test_days"], type="integer", minimum=1),
        "valid_days": Param(d["valid_days"], type="integer", minimum=1),
        "alpha": Param(d["alpha"], type="number", minimum=0, description="sampling exponent"),
        "model_params": Param(d["model_params"], type="string", description="GRU4Rec set"),
        "epochs": Param(d["epochs"], type="integer", minimum=1),
        "model_overrides": Param(
            d["model_overrides"], type="array", description="extra key=value parameters"
        ),
        "spark_master": Param(d["spark_master"], type="string"),
        "spark_conf": Param(d["spark_conf"], type="object"),
        "device": Param(d["device"], type="string", description="auto, cpu, cuda, cuda:N"),
        "promotion_margin": Param(d["promotion_margin"], type="number", minimum=0, maximum=0.99),
        "quality_thresholds": Param(
            d["quality_thresholds"], type="object", description="jobs.quality.Thresholds fields"
        ),
        "k": Param(d["k"], type="integer", minimum=1),
    }


def _night(context) -> Nightly:
    """Tonight's configuration: D is the previous day (the data interval's start)."""
    start = context.get("data_interval_start")
    if start is None:
        start = context["logical_date"] - dt.timedelta(days=1)
    return Nightly.from_params(dict(context["params"]), start.date())


def _run(cmd) -> str:
    """Run a step; data failures fail the task at once (no retries), others retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.nightly import run, step_env

    try:
        return run(cmd, step_env(cmd_master(cmd)))
    except DataFailure as exc:
        raise AirflowFailException(f"data quality / input failure: {exc}") from None


def cmd_master(cmd) -> str:
    return cmd[cmd.index("--master") + 1] if "--master" in cmd else "local"


@dag(
    dag_id="gru4rec_nightly",
    description="Nightly GRU4Rec retraining and batch recommendations with quality gates",
    doc_md=DOC,
    # Nightly at 03:00 UTC; the data interval is the 24 hours before, whose start date is D.
    schedule=CronTriggerTimetable(
        os.environ.get("GRU4REC_SCHEDULE", "0 3 * * *"),
        timezone="UTC",
        interval=dt.timedelta(days=1),
    ),
    # Early, so backfills of historical data (and tests on old samples) can run; catchup is off.
    start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params=_params(),
    tags=["gru4rec", "recommendations"],
    default_args={
        "owner": "data-platform",
        "retries": int(os.environ.get("GRU4REC_RETRIES", 2)),
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=6),
    },
)
def gru4rec_nightly():
    @task(pool=SPARK_POOL)
    def ingest(**context):
        night = _night(context)
        mapping = night.mapping_file()
        try:
            _run(night.ingest_cmd(mapping))
        finally:
            if mapping:
                os.unlink(mapping)

    @task(retries=0)
    def validate_raw(**context):
        _run(_night(context).validate_cmd("raw_events"))

    @task(pool=SPARK_POOL)
    def sessionize(**context):
        _run(_night(context).sessionize_cmd())

    @task(retries=0, outlets=[SESSIONS])
    def validate_sessions(**context):
        night = _night(context)
        _run(night.validate_cmd("sessions"))
        yield Metadata(SESSIONS, extra={"date": night.day, "path": night.sessions})

    @task(pool=SPARK_POOL)
    def build_datasets(**context):
        _run(_night(context).build_datasets_cmd())

    @task(pool=SPARK_POOL)
    def popularity(**context):
        _run(_night(context).popularity_cmd())

    @task(retries=0)
    def validate_datasets(**context):
        _run(_night(context).validate_cmd("datasets"))

    @task(pool=GPU_POOL, queue=GPU_QUEUE, **TRAIN_EXECUTOR)
    def train(**context):
        _run(_night(context).train_cmd())

    @task(pool=GPU_POOL, outlets=[MODEL])
    def evaluate(**context):
        from jobs.nightly import last_json

        night = _night(context)
        decision = last_json(_run(night.evaluate_cmd()))
        print(f"promotion gate: {decision['reason']}; serving {decision['serving_model']}")
        yield Metadata(
            MODEL,
            extra={
                "date": night.day,
                "promoted": decision["promoted"],
                "serving_model": decision["serving_model"],
                "reason": decision["reason"],
            },
        )

    @task(pool=GPU_POOL)
    def score(**context) -> str:
        from jobs.nightly import last_json

        return last_json(_run(_night(context).score_cmd()))["staged"]

    @task(retries=0)
    def validate_recommendations(staged: str, **context):
        _run(_night(context).validate_recommendations_cmd(staged))
        return staged

    @task(outlets=[RECOMMENDATIONS])
    def publish(staged: str, **context):
        from jobs.nightly import last_json

        night = _night(context)
        result = last_json(_run(night.publish_cmd(staged)))
        print(f"published {result['path']} ({result.get('sessions')} sessions)")
        print(f"run report: {night.quality_dir}/report.html")
        yield Metadata(
            RECOMMENDATIONS,
            extra={"date": night.day, "path": result["path"], "rows": result.get("rows")},
        )

    staged = score()
    (
        ingest()
        >> validate_raw()
        >> sessionize()
        >> validate_sessions()
        >> build_datasets()
        >> popularity()
        >> validate_datasets()
        >> train()
        >> evaluate()
        >> staged
    )
    publish(validate_recommendations(staged))


nightly = gru4rec_nightly()
