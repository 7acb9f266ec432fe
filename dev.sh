#!/usr/bin/env bash
# One entry point for a fresh machine. Each command creates the virtualenv (.venv) if needed.
#   ./dev.sh demo    the whole nightly DAG (airflow dags test) on generated data, embedded default
#   ./dev.sh test    ruff + the whole test suite (what CI runs)
#   ./dev.sh bench   the Spark jobs benchmark (1M and 10M events; see benchmarks/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
# The embedded default runs Spark in local mode: keep its endpoints on loopback.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"

die() { echo "dev.sh: $*" >&2; exit 1; }

check_prereqs() {
  command -v python3 >/dev/null || die "python3 >= 3.11 is required (found none)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 is required (found $(python3 --version 2>&1))"
  command -v java >/dev/null || die "Java 17+ is required by Spark (found no 'java' on PATH)"
}

ensure_venv() {
  # Reinstall when the project's dependency files change after the last install.
  if [[ -x "$PY" && -f "$VENV/.installed" && ! pyproject.toml -nt "$VENV/.installed" \
        && ! constraints.txt -nt "$VENV/.installed" ]]; then
    return
  fi
  check_prereqs
  echo "dev.sh: creating $VENV (first run takes a few minutes)" >&2
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  # torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on CPU hosts.
  "$PY" -m pip install -q -c constraints.txt "torch==2.13.0"
  # dev tools, and the deployment extras (Celery, Postgres, Kubernetes providers) that the
  # deployment tests start and that tests/infra checks against the image's manifests
  "$PY" -m pip install -q -c constraints.txt -e '.[dev,deploy]'
  touch "$VENV/.installed"
}

ensure_docs_assets() {
  # The Data Docs' scripts and styles, from the npm registry (pinned, sha512-checked), so the
  # quality reports render with no network. Without them the reports load them from CDNs.
  "$PY" -m jobs.quality.docs_assets check >/dev/null 2>&1 \
    || "$PY" -m jobs.quality.docs_assets fetch \
    || echo "dev.sh: Data Docs assets not fetched; the reports will need the network" >&2
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  demo)
    ensure_venv
    ensure_docs_assets
    exec "$PY" -m jobs.dev.demo "$@"
    ;;
  test)
    ensure_venv
    ensure_docs_assets
    # the servers and the browser the deployment and browser tests start (Debian packages);
    # where they cannot be installed those tests fail and say what is missing, the rest runs
    infra/local/packages.sh || echo "dev.sh: the deployment and browser tests will fail" >&2
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    # Two workers (TEST_WORKERS=0: one process), a module at a time, in the order collected
    # (tests/conftest.py puts the slow modules first).
    workers=(-n "${TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder)
    [[ "${TEST_WORKERS:-2}" == 0 ]] && workers=(-p no:xdist)
    exec "$PY" -m pytest "${workers[@]}" "$@"
    ;;
  bench)
    ensure_venv
    exec "$PY" benchmarks/spark_jobs.py "$@"
    ;;
  *)
    sed -n '2,5p' "$0"
    [[ "$cmd" == help ]] || exit 2
    ;;
esac
