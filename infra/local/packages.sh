#!/usr/bin/env bash
# Installs the Debian packages the deployment and browser tests start, when they are missing:
# PostgreSQL (Airflow's metadata DB), Redis (the Celery broker), Chromium and its WebDriver
# (the UI and report checks). Nothing is started here: the tests start their own servers on
# loopback ports, in temporary directories (jobs/dev/stack.py), and stop them by process id.
# Needs root or sudo, and apt (Debian, Ubuntu); exits non-zero, naming what is missing, when
# it cannot install them.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
((${#missing[@]})) || exit 0

sudo=()
if [[ $(id -u) != 0 ]]; then
  if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
    echo "infra/local/packages.sh: ${missing[*]} missing; install them as root:" \
         "apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi
command -v apt-get >/dev/null || {
  echo "infra/local/packages.sh: ${missing[*]} missing and no apt-get here: install them" \
       "with this system's package manager" >&2
  exit 1
}
echo "infra/local/packages.sh: installing ${missing[*]} (Debian packages)" >&2
# A package's service must not start (the tests start their own; CI containers have no init
# system): policy-rc.d exiting 101 tells invoke-rc.d "not allowed" during the install. The
# trap is set before the file exists, so it never outlives this script.
policy=/usr/sbin/policy-rc.d
placed=0
cleanup() { if [[ $placed == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
if [[ ! -e $policy ]]; then
  placed=1
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
fi
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${missing[@]}"
# On a machine booted with systemd the packages enable their services for the next boot
# (PostgreSQL on 5432, Redis on 6379): the tests do not use them; leave them off.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  for unit in "${missing[@]}"; do  # only the services of what was installed just now
    [[ $unit == postgresql || $unit == redis-server ]] || continue
    "${sudo[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi
