"""The API server's admin password comes from AIRFLOW_ADMIN_PASSWORD into a 0600 file, and
never the example's placeholder or nothing."""

from __future__ import annotations

import json
import stat

from jobs.nightly import auth


def test_the_password_file_is_written_private_from_the_environment(tmp_path, monkeypatch, capsys):
    target = tmp_path / "airflow" / "passwords.json"
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "s3cret-of-our-own")
    assert auth.main([str(target)]) == 0
    assert json.loads(target.read_text()) == {"admin": "s3cret-of-our-own"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "s3cret-of-our-own" not in capsys.readouterr().out


def test_no_password_or_the_placeholder_is_refused(tmp_path, monkeypatch, capsys):
    target = tmp_path / "passwords.json"
    monkeypatch.delenv("AIRFLOW_ADMIN_PASSWORD", raising=False)
    assert auth.main([str(target)]) == 2
    assert "AIRFLOW_ADMIN_PASSWORD expected" in capsys.readouterr().err
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "change-me")
    assert auth.main([str(target)]) == 2
    assert "'change-me'" in capsys.readouterr().err
    assert not target.exists()
