#!/usr/bin/env bash
# Installs the Debian packages the deployment and browser tests start, when they are missing:
# PostgreSQL (Airflow's metadata DB), Redis (the Celery broker), Chromium and its WebDriver
# (the UI and report checks). Nothing is started here, and the packages' own services are not
# used: the tests start their servers on loopback ports, as the current user or `postgres`,
# in temporary directories (jobs/dev/stack.py), and stop them by process id.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
((${#missing[@]})) || exit 0

sudo=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || {
    echo "infra/local/packages.sh: ${missing[*]} missing; install them as root:" \
         "apt-get install ${missing[*]}" >&2
    exit 1
  }
  sudo=(sudo)
fi
echo "infra/local/packages.sh: installing ${missing[*]} (Debian packages)" >&2
# A package's service must not start (no init system in CI containers; the tests start their
# own): policy-rc.d 101 tells invoke-rc.d "not allowed" for the duration of the install.
policy=/usr/sbin/policy-rc.d
placed=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  placed=1
fi
trap '[[ $placed == 1 ]] && "${sudo[@]}" rm -f "$policy"' EXIT
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
  "${missing[@]}"
