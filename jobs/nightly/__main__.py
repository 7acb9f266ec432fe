"""`python -m jobs.nightly <step>`: see jobs/nightly/steps.py."""

from jobs.common.cli import run_main
from jobs.nightly.steps import main

run_main(main)
