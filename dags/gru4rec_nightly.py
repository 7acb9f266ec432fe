"""gru4rec_nightly: raw clicks -> quality-checked sessions -> GRU4Rec -> published top-k.

Orchestration only: each task starts one process built by `jobs.nightly.commands`
(spark-submit for the Spark stages, the gru4rec CLI for training and scoring, `python -m
jobs.nightly` for the pipeline's own steps). No heavy import, connection or
Variable look-up happens while this file is parsed.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, CronTriggerTimetable, Metadata, Param, dag, setup, task, teardown

from jobs.common.lake import Lake, default_root
from jobs.nightly import commands
from jobs.nightly.alerts import NightAlert
from jobs.nightly.params import PARAMS, Night, default_params, json_type

_DEFAULTS = default_params()
_LAKE = Lake.resolved(_DEFAULTS["lake"] or default_root()).root
_URI = _LAKE if "://" in _LAKE else f"file://{_LAKE}"
SESSIONS = Asset(name="gru4rec_sessions", uri=f"{_URI}/sessions")
MODEL = Asset(name="gru4rec_model", uri=f"{_URI}/models")
RECOMMENDATIONS = Asset(name="gru4rec_recommendations", uri=f"{_URI}/recommendations")

# Pools keep a small machine from running two Spark applications or two torch processes at
# once; a deployment sizes them (`airflow pools set`). Every task that starts Spark is in the
# spark pool; every torch task that can use the GPU goes to a queue only GPU workers consume
# (CeleryExecutor; the LocalExecutor ignores queues) and holds a gpu pool slot.
SPARK_POOL = os.environ.get("GRU4REC_SPARK_POOL", "spark")
GPU_POOL = os.environ.get("GRU4REC_GPU_POOL", "gpu")
GPU_QUEUE = os.environ.get("GRU4REC_GPU_QUEUE", "gpu")
# KubernetesExecutor: a pod template requesting nvidia.com/gpu for the torch tasks.
_GPU_TEMPLATE = os.environ.get("GRU4REC_GPU_POD_TEMPLATE")
GPU_EXECUTOR = {"executor_config": {"pod_template_file": _GPU_TEMPLATE}} if _GPU_TEMPLATE else {}
ON_GPU = {"pool": GPU_POOL, "queue": GPU_QUEUE, **GPU_EXECUTOR}

DOC = """
### GRU4Rec nightly

Processes **the previous day** D (the data interval's start) of the raw clickstream and publishes
each of D's sessions' top-k next-item recommendations to `recommendations/dt=D/`.

| task | does | on failure |
|---|---|---|
| ingest | Spark: raw delivery of D (and never-ingested days of the window) -> `events/`, `quarantine/` | retried |
| validate_raw | GX suite `raw_events` (nulls, id formats, timestamps on D, quarantine share, volume) | **fails fast** |
| sessionize | Spark: sessions of D (inactivity gap `gap_seconds`, 30 min) -> `sessions/dt=D` | retried |
| validate_sessions | GX suite `sessions` (ids, positions, session length distribution) | **fails fast** |
| build_datasets | Spark: filter + time split of the training window -> `datasets/run=D`, then (same application) the item index and sampling weights, and the datasets gate's validation | retried |
| popularity | the item index + sampling weights: reused when build_datasets built them from this very split (no JVM), else built in its own Spark application | retried |
| validate_datasets | GX suites `datasets` (coverage, no leakage) and `item_index` | **fails fast** |
| train | GRU4Rec on the `gpu` queue/pool (CPU when no GPU) -> `models/run=D`: full, or (`train_mode` incremental) warm-started from the serving model on the sessions it has not seen, fully retrained every `full_retrain_every` nights | retried |
| evaluate | **promotion gate** vs the live model on tonight's test, and the floor: the best baseline (`gpu` queue/pool) | retried |
| refresh | the serving model warm-started on D's sessions (`refresh_before_scoring`), recorded in `models/run=D/refresh.json`; it then scores D and is the next night's incumbent (`gpu` queue/pool) | retried |
| score | top-k per session of D with the (refreshed) serving model, staged, not visible (`gpu` queue/pool); **skipped** (and so are the next two) when no model serves D: a first night below the floor | retried |
| validate_recommendations | GX suite `recommendations` on the staged table | **fails fast** |
| publish | atomic swap of `recommendations/dt=D` | retried |

*Fails fast*: a data-quality failure fails the task without retries (a gate's infrastructure
failure, such as a crashed JVM or a window day another run is writing, is retried), names the
failing expectations in the log and stops the run before anything is published; the previous
recommendations stay as they were. Reports: `quality/dt=D/report.html` (run report) and
`quality/dt=D/data_docs/index.html` (Great Expectations Data Docs).

Every task is idempotent per date: rerun or backfill any date range
(`airflow backfill create --dag-id gru4rec_nightly --from-date ... --to-date ...`).
Params (lake, source preset or column mapping, window, epochs, Spark master, device, promotion
margin, ...) default from `GRU4REC_*` environment variables; see docs/dag.md.
"""


def _json(value):
    """A default as JSON-schema sees it (tuples are arrays)."""
    return list(value) if isinstance(value, tuple) else value


def _params() -> dict:
    """One Param per settings field (jobs/nightly/params.py), defaults from GRU4REC_* env."""
    return {
        name: Param(
            _json(_DEFAULTS[name]), type=json_type(spec.default), description=spec.description
        )
        for name, spec in PARAMS.items()
    }


def _night(context) -> Night:
    """Tonight's configuration: D is the previous day (the data interval's start)."""
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.common.errors import PipelineError

    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is None or (end is not None and start >= end):
        # no interval (GRU4REC_SCHEDULE=none: runs triggered from outside): the day before
        # the logical date, as a scheduled run of the same logical date would process; a run
        # triggered with no logical date at all processes the day before it was triggered
        ref = end or context.get("logical_date") or context["dag_run"].run_after
        start = ref - dt.timedelta(days=1)
    try:
        night = Night.from_params(dict(context["params"]), start.date())
    except PipelineError as exc:  # a bad param: retrying cannot help
        raise AirflowFailException(f"invalid params: {exc}") from None
    # The run owns D's lease (jobs.common.locks) from hold_date to release_date; its steps
    # inherit the owner through the environment, so they hold it and no other run does.
    os.environ["GRU4REC_RUN_OWNER"] = _owner(context)
    return night


def _owner(context) -> str:
    return f"airflow:{context['dag'].dag_id}:{context['run_id']}"


def _run(cmd) -> str:
    """Run a step; data failures fail the task at once (no retries), others retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.nightly.runner import DataFailure, run, step_env

    try:
        return run(cmd, step_env(cmd[cmd.index("--master") + 1] if "--master" in cmd else "local"))
    except DataFailure as exc:
        raise AirflowFailException(f"data quality / input failure: {exc}") from None


def _gate(night: Night, dataset: str) -> None:
    """A Spark-side quality gate; the run reports of the days it validated are refreshed."""
    from jobs.common.timeutil import days_before
    from jobs.nightly.report import write_run_reports
    from jobs.nightly.runner import last_json

    try:
        # the producing job validated its output in its own Spark application: reuse that
        # verdict when it judged exactly the data there now, else validate (a JVM of our own)
        if not last_json(_run(commands.reuse_verdict(night, dataset))).get("reused"):
            _run(commands.validate(night, dataset))
    finally:  # the report must never hide the gate's own verdict
        day = dt.date.fromisoformat(night.day)
        write_run_reports(night.lake, [*days_before(day, night.datasets.window_days), day])


def _schedule():
    """Nightly at 03:00 UTC by default (GRU4REC_SCHEDULE: another cron); the data interval is
    the 24 hours before, whose start date is D. `none`: never scheduled, only triggered (an
    external orchestrator, the REST API); a run then processes the day before its logical
    date, like a scheduled one."""
    cron = os.environ.get("GRU4REC_SCHEDULE", "0 3 * * *").strip()
    if cron.lower() == "none":  # only when asked for by name
        return None
    if not cron:  # never read as "no schedule": a night that silently stops running
        raise ValueError("GRU4REC_SCHEDULE: expected a cron expression or 'none', found ''")
    return CronTriggerTimetable(cron, timezone="UTC", interval=dt.timedelta(days=1))


@dag(
    dag_id="gru4rec_nightly",
    description="Nightly GRU4Rec retraining and batch recommendations with quality gates",
    doc_md=DOC,
    schedule=_schedule(),
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
        # a task that fails for good (a gate, or out of retries) tells people: the log, an
        # alerts file, and e-mail / a webhook where configured (jobs/nightly/alerts.py)
        "on_failure_callback": NightAlert(),
    },
)
def gru4rec_nightly():
    # One short definition per task (TaskFlow), then the chain: the function is as long as
    # the DAG has tasks; each body is one call into jobs.nightly.
    @setup
    def hold_date(**context):
        """Take D's lease for this run: a second run of D (a backfill, a manual run) is
        refused until this one ends, or until its lease goes stale (jobs.common.locks)."""
        from jobs.common.locks import DateLease

        night = _night(context)
        DateLease(night.lake, night.day).acquire(_owner(context))

    @teardown
    def release_date(**context):
        from jobs.common.locks import DateLease

        night = _night(context)
        DateLease(night.lake, night.day).release(_owner(context))

    @task(pool=SPARK_POOL)
    def ingest(**context):
        night = _night(context)
        mapping = commands.mapping_file(night)
        try:
            _run(commands.ingest(night, mapping))
        finally:
            if mapping:
                os.unlink(mapping)

    # A gate retries only what retrying can fix (a crashed JVM, a window day another run is
    # writing: exit 75): a failed expectation raises AirflowFailException, never retried.
    @task(pool=SPARK_POOL)
    def validate_raw(**context):
        _gate(_night(context), "raw_events")

    @task(pool=SPARK_POOL)
    def sessionize(**context):
        _run(commands.sessionize(_night(context)))

    @task(pool=SPARK_POOL, outlets=[SESSIONS])
    def validate_sessions(**context):
        night = _night(context)
        _gate(night, "sessions")
        yield Metadata(
            SESSIONS, extra={"date": night.day, "path": night.lake.sessions_day(night.day)}
        )

    @task(pool=SPARK_POOL)
    def build_datasets(**context):
        _run(commands.build_datasets(_night(context)))

    @task(pool=SPARK_POOL)
    def popularity(**context):
        night = _night(context)
        if commands.popularity_reused(night):  # built in build_datasets' own application
            print("popularity: items/ and popularity/ were built from this train split with "
                  "this alpha by build_datasets (reused; no Spark application started)")  # fmt: skip
            return
        _run(commands.popularity(night))

    @task(pool=SPARK_POOL)
    def validate_datasets(**context):
        _gate(_night(context), "datasets")

    @task(**ON_GPU)
    def train(**context) -> str:
        night = _night(context)
        out = commands.new_model_dir(night)  # a new immutable version, also on a retry
        plan = commands.train_plan(night)
        print(f"training {plan['mode']}: {plan['reason']}")
        _run(commands.train(night, out, plan))
        return out

    @task(outlets=[MODEL], **ON_GPU)
    def evaluate(candidate: str, **context):
        from jobs.nightly.runner import last_json

        night = _night(context)
        decision = last_json(_run(commands.evaluate(night, candidate)))
        print(f"promotion gate: {decision['reason']}; serving {decision['serving_model']}")
        yield Metadata(
            MODEL,
            extra={
                "date": night.day,
                "promoted": decision["promoted"],
                "flagged": decision["flagged"],
                "serving_model": decision["serving_model"],
                "reason": decision["reason"],
                "floor": {
                    k: decision["floor"].get(k)
                    for k in ("passed", "best_baseline", "baseline", "candidate", "floor")
                },
            },
        )

    @task(**ON_GPU)
    def refresh(**context):
        """The serving model warm-started on D's sessions: the model that scores D has
        seen D (and D's new items)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.nightly.promote import NoServingModel, serving_model_name

        night = _night(context)
        if not night.train.refresh:
            raise AirflowSkipException("refresh_before_scoring is off: the serving model scores D")
        try:
            serving = serving_model_name(night.lake, night.day)
        except NoServingModel as exc:
            raise AirflowSkipException(str(exc)) from None
        out = commands.new_refresh_dir(night)
        _run(commands.refresh(night, serving, out))
        _run(commands.refreshed(night, out))

    @task(trigger_rule="none_failed", **ON_GPU)
    def score(**context) -> str:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from jobs.common.errors import PipelineError
        from jobs.nightly.promote import NoServingModel, scoring_model

        night = _night(context)
        try:
            model = scoring_model(night.lake, night.day)
        except NoServingModel as exc:  # a first night below the floor: nothing to publish
            raise AirflowSkipException(str(exc)) from None
        except PipelineError as exc:  # no decision for D: retrying cannot help
            raise AirflowFailException(f"no serving model: {exc}") from None
        staged = commands.new_scored_dir(night)
        _run(commands.score(night, model, staged))
        return staged

    @task
    def validate_recommendations(staged: str, **context):
        _run(commands.validate_recommendations(_night(context), staged))
        return staged

    @task(outlets=[RECOMMENDATIONS])
    def publish(staged: str, **context):
        from jobs.nightly.runner import last_json

        night = _night(context)
        result = last_json(_run(commands.publish(night, staged)))
        print(f"published {result['path']} ({result.get('sessions')} sessions)")
        print(f"run report: {night.lake.run_report(night.day)}")
        yield Metadata(
            RECOMMENDATIONS,
            extra={"date": night.day, "path": result["path"], "rows": result.get("rows")},
        )

    staged = score()
    model = train()
    lease = hold_date()
    done = publish(validate_recommendations(staged))
    (
        lease
        >> ingest()
        >> validate_raw()
        >> sessionize()
        >> validate_sessions()
        >> build_datasets()
        >> popularity()
        >> validate_datasets()
        >> model
    )
    evaluate(model) >> refresh() >> staged
    done >> release_date().as_teardown(setups=lease)


nightly = gru4rec_nightly()
