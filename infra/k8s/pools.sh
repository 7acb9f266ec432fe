#!/usr/bin/env bash
# Pools sized for the cluster (run once after `airflow db migrate`, e.g. in a Helm hook job).
set -euo pipefail
airflow pools set spark "${SPARK_POOL_SLOTS:-4}" "Spark applications at once"
airflow pools set gpu "${GPU_POOL_SLOTS:-2}" "GPU processes at once (train, evaluate, score)"
