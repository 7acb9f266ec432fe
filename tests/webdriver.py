"""A headless Chromium driven over the W3C WebDriver protocol (chromedriver, Debian's
`chromium-driver`), with urllib: no Selenium. Used by the browser checks of the Airflow UI, the
trends page and the Data Docs.

The browser has no network but loopback: every other host fails to resolve and goes through a
dead proxy, so a page that needs a CDN shows it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobs.dev.stack import Service, _pdeathsig, _start_time, free_port, stop_services

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriverError(RuntimeError):
    pass


def chromium_paths() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        raise WebDriverError(
            "the browser checks need Debian's chromium and chromium-driver (found "
            f"chromium={chrome}, chromedriver={driver}): run infra/local/packages.sh"
        )
    return chrome, driver


class Browser:
    def __init__(self, workdir: Path, width: int = 1600, height: int = 1000) -> None:
        chrome, driver = chromium_paths()
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._log = open(workdir / "chromedriver.log", "w")  # noqa: SIM115 - closed in quit()
        self._proc = subprocess.Popen(
            [driver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pdeathsig,  # noqa: PLW1509 - gone with the test run, however it ends
        )
        self._started = _start_time(self._proc.pid)
        self.session = None
        try:
            self._wait_ready()
            args = [
                "--headless=new",
                "--no-sandbox",  # the tests may run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--window-size={width},{height}",
                f"--user-data-dir={workdir / 'profile'}",
                # no network but loopback
                "--proxy-server=http://127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--allow-file-access-from-files",
            ]
            caps = {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {"binary": chrome, "args": args},
                        "goog:loggingPrefs": {"browser": "ALL"},
                    }
                }
            }
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.quit()
            raise

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise WebDriverError(f"chromedriver exited with {self._proc.returncode}")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.2)
        raise WebDriverError("chromedriver did not become ready")

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        url = f"http://127.0.0.1:{self.port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise WebDriverError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    # -- navigation and script --------------------------------------------------------------
    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    @property
    def url(self) -> str:
        return self._call("GET", self._s("/url"))

    def js(self, script: str, *args):
        """Run `script` (a function body: `return ...`) in the page."""
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 30, what: str = "", *args):
        """Poll `script` until it returns something truthy; returns it."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.js(script, *args)
            except WebDriverError:
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise WebDriverError(
            f"timed out after {timeout:.0f} s waiting for {what or script} at {self.url}"
        )

    # -- elements -----------------------------------------------------------------------------
    def find(self, css: str) -> dict:
        return self._call("POST", self._s("/element"), {"using": "css selector", "value": css})

    def type(self, element: dict, text: str) -> None:
        eid = element[ELEMENT]
        self._call("POST", self._s(f"/element/{eid}/value"), {"text": text})

    def click(self, element: dict) -> None:
        self._call("POST", self._s(f"/element/{element[ELEMENT]}/click"), {})

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self._call("GET", self._s("/screenshot")))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return path

    def console(self) -> list[dict]:
        """The page's console messages since the last call (errors of failed loads included)."""
        try:
            return self._call("POST", self._s("/se/log"), {"type": "browser"})
        except WebDriverError:
            return []

    def quit(self) -> None:
        if self.session:
            with contextlib.suppress(OSError, WebDriverError):
                self._call("DELETE", self._s(""), timeout=20)
            self.session = None
        # chromedriver and the browser it started (its session's processes)
        stop_services([Service("chromedriver", self._proc, self._proc.pid, self._started, "")], 20)
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.quit()
