"""The API server's users for Airflow's SimpleAuthManager, from the environment.

    AIRFLOW_ADMIN_PASSWORD=... python -m jobs.nightly.auth /opt/airflow/passwords.json

writes `{"admin": <password>}` (mode 0600) to the file that
`AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE` names, so the password comes from a secret
(the compose `.env`, a Kubernetes Secret), never a command line or a log. Without the variable
it refuses, rather than leaving Airflow to generate a password nobody knows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from jobs.common.localfs import write_text_atomic


def write_passwords_file(path: str | os.PathLike, users: dict[str, str]) -> Path:
    return write_text_atomic(path, json.dumps(users), mode=0o600)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: AIRFLOW_ADMIN_PASSWORD=... python -m jobs.nightly.auth PASSWORDS_FILE",
              file=sys.stderr)  # fmt: skip
        return 2
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    if not password or password == "change-me":
        print("jobs.nightly.auth: AIRFLOW_ADMIN_PASSWORD expected (a secret of your own), found "
              + ("the example's 'change-me'" if password else "none"), file=sys.stderr)  # fmt: skip
        return 2
    path = write_passwords_file(args[0], {"admin": password})
    print(f"wrote the admin user's password to {path} (mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
