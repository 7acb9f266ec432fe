"""Every job and step documents its options (`--help`)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module, option",
    [
        ("jobs.ingest", "--preset"),
        ("jobs.sessionize", "--gap-seconds"),
        ("jobs.build_datasets", "--min-item-support"),
        ("jobs.popularity", "--alpha"),
        ("jobs.run_all", "--window-days"),
        ("jobs.validate", "--catch-up-days"),
        ("jobs.nightly", "--staged"),
        ("jobs.dev.synth", "--events"),
        ("jobs.dev.demo", "--epochs"),
    ],
)
def test_every_job_documents_its_options(module, option):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and option in out.stdout
