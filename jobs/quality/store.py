"""The per-night Great Expectations store: a file-backed context under `quality/dt=D/`.

Every validation writes its result as JSON (`quality/dt=D/<suite>.json`) and adds its pages to
the day's Data Docs site (`quality/dt=D/data_docs/index.html`: its result, its suite, the
index; the pages load their scripts and styles from the quality root, `docs_assets`); a rerun
replaces the suite's previous result. `raise_if_failed` is the gate: a failed suite stops the run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from jobs.common.errors import PipelineError
from jobs.common.localfs import write_json_atomic
from jobs.quality.suites import describe_failures

log = logging.getLogger("jobs.quality")

# A Spark frame of at most this many rows is validated on pandas: Great Expectations on Spark
# runs every metric as its own Spark job (seconds each on a small day), on pandas the whole
# suite takes well under a second. Larger frames stay on Spark. The suites are the same.
LOCAL_MAX_ROWS = 1_000_000


class QualityGateError(PipelineError):
    """A dataset failed its Great Expectations suite: the run stops, nothing is published."""


class QualityStore:
    """The file-backed GX context of one day: results JSON + Data Docs under `root`.

    `root` is `quality/dt=D` (a local or mounted directory).
    """

    def __init__(
        self, root: str | os.PathLike, stamp: dict | None = None, run_name: str | None = None
    ) -> None:
        import great_expectations as gx

        self.root = Path(root)
        self.stamp = dict(stamp or {})  # recorded in every result (what it was computed from)
        # Each validation's run name in Data Docs: the night (`dt=D` -> D) unless given.
        name = self.root.name
        self.run_name = run_name or (name[3:] if name.startswith("dt=") else name)
        self.root.mkdir(parents=True, exist_ok=True)
        self.docs_dir = self.root / "data_docs"
        self.context = gx.get_context(mode="file", project_root_dir=str(self.root))
        _quiet(self.context)
        site = {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(self.docs_dir.resolve()),
            },
        }
        sites = self.context.list_data_docs_sites()
        if "local_site" in sites:
            self.context.update_data_docs_site("local_site", site)
        else:
            self.context.add_data_docs_site("local_site", site)

    @property
    def docs_index(self) -> Path:
        return self.docs_dir / "index.html"

    def _batch(self, engine: str, asset_name: str):
        sources = self.context.data_sources
        if engine == "spark":
            source = sources.add_or_update_spark("spark")
        elif engine == "pandas":
            source = sources.add_or_update_pandas("pandas")
        else:
            raise ValueError(f"engine: expected 'spark' or 'pandas', found {engine!r}")
        try:
            asset = source.get_asset(asset_name)
        except LookupError:
            asset = source.add_dataframe_asset(asset_name)
        try:
            return asset.get_batch_definition("whole")
        except (LookupError, KeyError):
            return asset.add_batch_definition_whole_dataframe("whole")

    def _forget(self, suite_name: str) -> None:
        """Drop the suite's earlier results of this day, so a rerun replaces them, and its
        earlier validation definition and checkpoint: they name the engine's data source, and
        a rerun may judge the day on the other engine (GX cannot even load a definition whose
        data asset is gone)."""
        gx_dir = self.root / "gx"
        shutil.rmtree(gx_dir / "uncommitted" / "validations" / suite_name, ignore_errors=True)
        for store in ("validation_definitions", "checkpoints"):
            (gx_dir / store / f"{suite_name}.json").unlink(missing_ok=True)

    def validate(
        self,
        suite,
        frame,
        engine: str,
        name: str | None = None,
        extra: dict | None = None,
        local_max_rows: int | None = None,
    ) -> dict:
        """Run `suite` on `frame` (a Spark or pandas DataFrame), keep the result (with `extra`,
        e.g. the counts behind it) and rebuild the Data Docs; returns {"suite", "success",
        "failed", "statistics", "engine", ...}.

        A Spark frame of at most `local_max_rows` rows (default `LOCAL_MAX_ROWS`; 0: never) is
        collected and validated on pandas; the result records which engine judged it."""
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        name = name or suite.name
        limit = LOCAL_MAX_ROWS if local_max_rows is None else local_max_rows
        if engine == "spark":
            # Materialize the derived columns once: GX computes each metric as its own Spark
            # job, which would otherwise recompute the windows and joins every time.
            # Small days spread over many shuffle partitions make every metric a job of many
            # tiny tasks: keep about two partitions per core, never more than there were.
            target = 2 * frame.sparkSession.sparkContext.defaultParallelism
            if frame.rdd.getNumPartitions() > target:
                frame = frame.coalesce(target)
            frame = frame.localCheckpoint(eager=True)
            if limit > 0 and frame.count() <= limit:
                frame, engine = _to_pandas(frame), "pandas"
        self._forget(name)
        batch = self._batch(engine, name)
        suite = self.context.suites.add_or_update(suite)
        vd = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[vd],
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(
            batch_parameters={"dataframe": frame},
            run_id=RunIdentifier(run_name=self.run_name, run_time=_now()),
        )
        key, result = next(iter(run.run_results.items()))
        summary = {
            "suite": name,
            "success": bool(result.success),
            "failed": describe_failures(result),
            "statistics": dict(result.statistics),
            "data_docs": str(self.docs_index),
            "engine": engine,
            **self.stamp,
            **(extra or {}),
            "result": result.to_json_dict(),
        }
        write_json_atomic(self.root / f"{name}.json", summary)  # the verdict, before the pages
        self._publish_docs(key, result, name)
        log.info(
            "suite %s: %s (%s/%s expectations passed)",
            name,
            "passed" if summary["success"] else "FAILED",
            summary["statistics"].get("successful_expectations"),
            summary["statistics"].get("evaluated_expectations"),
        )
        return summary

    def _publish_docs(self, key, result, asset_name: str) -> None:
        """Add this result to the day's Data Docs. Data Docs read a validation's data
        asset from its batch spec, which a dataframe asset leaves without one (the page said
        "Data asset: None"): the stored result gets it before the site is built. The pages
        then load their scripts and styles from the quality root (`docs_assets`), not CDNs."""
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        from jobs.quality.docs_assets import localize

        spec = result.meta.get("batch_spec")
        if isinstance(spec, dict) and not spec.get("data_asset_name"):
            result.meta["batch_spec"] = {**spec, "data_asset_name": asset_name}
            self.context.validation_results_store.set(key, result)
        # this result's page, its suite's page and the index (not every page of the day: a
        # large day's recommendations gate writes one result per chunk); the pages written
        # from now on are those no older than a marker written now (the same file system's
        # clock, whatever its time stamps' granularity)
        self.docs_dir.mkdir(parents=True, exist_ok=True)
        marker = self.docs_dir / ".build"
        marker.write_text("")
        since = marker.stat().st_mtime
        suite = ExpectationSuiteIdentifier(name=result.suite_name)
        self.context.build_data_docs(site_names=["local_site"], resource_identifiers=[key, suite])
        try:
            localize(self.docs_dir, self.root.parent, since=since)
        except OSError as exc:  # the pages stay readable online; the verdict is unaffected
            log.warning("Data Docs of %s keep their CDN links: %s", self.root, exc)


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _to_pandas(frame):
    """A (small, materialized) Spark frame as pandas, through Arrow."""
    spark = frame.sparkSession
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key, "false")
    spark.conf.set(key, "true")
    try:
        return frame.toPandas()
    finally:
        spark.conf.set(key, before)


def raise_if_failed(*summaries: dict) -> None:
    """The quality gate: a failed suite stops the run with every failing expectation named."""
    failed = [s for s in summaries if not s["success"]]
    if failed:
        lines = [f"suite '{s['suite']}': " + "; ".join(s["failed"]) for s in failed]
        docs = failed[0].get("data_docs", "")
        raise QualityGateError(
            "data quality gate failed: "
            + " | ".join(lines)
            + (f" (Data Docs: {docs})" if docs else "")
        )


def validate_ephemeral(build_suite, frame) -> dict:
    """`build_suite()` runs after the context exists (GX needs one to build a suite)."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    _quiet(context)
    suite = build_suite()
    source = context.data_sources.add_pandas("scored")
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("day")
    suite = context.suites.add(suite)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    return {
        "suite": suite.name,
        "success": bool(result.success),
        "failed": describe_failures(result),
        "result": result.to_json_dict(),
    }


def _quiet(context) -> None:
    """No progress bars in job logs."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other GX versions
        log.debug("could not turn GX progress bars off")
