"""Every job, step and model command documents its options (`--help`): each option says what
it is, a default is shown only when it says something, and the console scripts run them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def undocumented(help_text: str) -> list[str]:
    """Options of an argparse --help page with no description of their own."""
    lines = help_text.split("\n")
    bare = re.compile(r"^  (-[\w-]+(?:, --[\w-]+)?)(?: [A-Z_{][^ ]*)?\s*$")
    out = []
    for i, line in enumerate(lines):
        m = bare.match(line)
        follows = lines[i + 1] if i + 1 < len(lines) else ""
        if m and m.group(1) != "-h, --help" and not follows.startswith(" " * 10):
            out.append(m.group(1))
    return out


@pytest.mark.parametrize(
    "command, option",
    [
        (["jobs.ingest"], "--preset"),
        (["jobs.sessionize"], "--gap-seconds"),
        (["jobs.build_datasets"], "--min-item-support"),
        (["jobs.popularity"], "--alpha"),
        (["jobs.run_all"], "--window-days"),
        (["jobs.validate"], "--catch-up-days"),
        (["jobs.nightly"], "--staged"),
        (["jobs.nightly.backtest"], "--nights"),
        (["jobs.dev.synth"], "--events"),
        (["jobs.dev.demo"], "--epochs"),
        (["gru4rec", "train"], "--params"),
        (["gru4rec", "evaluate"], "--cutoffs"),
        (["gru4rec", "score"], "--max-events"),
        (["gru4rec", "baselines"], "--test"),
    ],
)
def test_every_command_documents_its_options(command, option):
    out = subprocess.run(
        [sys.executable, "-m", *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and option in out.stdout, out.stderr[-2000:]
    assert undocumented(out.stdout) == []
    assert not re.search(r"\(default: (None|\[\]|False|\(\))\)", out.stdout), out.stdout


def test_the_undocumented_check_finds_a_bare_option():
    page = "options:\n  -h, --help  show\n  --window-days WINDOW_DAYS\n  --lake LAKE  the lake\n"
    assert undocumented(page) == ["--window-days"]


def test_every_console_script_is_installed_and_answers_help():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"gru4rec", "gru4rec-ingest", "gru4rec-nightly", "gru4rec-demo"} <= set(scripts)
    bindir = Path(sys.executable).parent
    for name in ("gru4rec", "gru4rec-build-datasets", "gru4rec-nightly"):
        out = subprocess.run([bindir / name, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage:" in out.stdout, (name, out.stderr[-2000:])
    for target in scripts.values():  # every entry point names a real function
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func)), target
