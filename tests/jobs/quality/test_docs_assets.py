"""Data Docs render with no network: every CDN link Great Expectations writes is served from
the quality root, the pinned tarballs are checked, and a real headless Chromium with no network
shows the index table, the styles, the icons, each validation's run name (the night) and data
asset (the dataset)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import re
import tarfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from jobs.quality import docs_assets
from jobs.quality.store import QualityStore
from tests.webdriver import Browser

ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts"
_EXTERNAL = re.compile(r"<(?:script|link|img)\b[^>]*?(?:src|href)=[\"'](https?://[^\"']+)")


def test_every_cdn_url_in_the_installed_templates_is_served_locally():
    """A Great Expectations upgrade that adds or changes a CDN link fails here, by name."""
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    found = set()
    for t in templates.glob("*.j2"):
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", t.read_text()):
            found |= set(re.findall(r"(?:src|href)=\"(https://[^\"{]+)\"", tag))
    assert found, "no CDN link found in the templates: the check itself is broken"
    unknown = sorted(found - set(docs_assets.URLS))
    assert not unknown, f"CDN links not served locally (add them to docs_assets.URLS): {unknown}"


def _site(root: Path) -> QualityStore:
    import great_expectations as gx

    store = QualityStore(root / "quality" / "dt=2026-01-05")
    ok = gx.ExpectationSuite(name="sessions")
    ok.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="session_id"))
    bad = gx.ExpectationSuite(name="raw_events")
    bad.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="item_id"))
    store.validate(ok, pd.DataFrame({"session_id": ["s1", "s2"]}), "pandas")
    store.validate(bad, pd.DataFrame({"item_id": ["i1", None]}), "pandas")
    return store


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    lacking = docs_assets.missing()
    assert not lacking, (
        f"Data Docs assets missing in {docs_assets.assets_dir()}: {lacking} "
        "(./dev.sh fetches them: python -m jobs.quality.docs_assets fetch)"
    )
    return _site(tmp_path_factory.mktemp("docs"))


def test_pages_load_nothing_from_the_network_and_every_local_link_resolves(site):
    pages = list(site.docs_dir.rglob("*.html"))
    assert len(pages) >= 5  # index, two suites, two validations
    for page in pages:
        text = page.read_text()
        assert not _EXTERNAL.findall(text), (page, _EXTERNAL.findall(text))
        for ref in re.findall(r"(?:src|href)=\"([^\"#:]+)\"", text):
            assert (page.parent / ref).resolve().is_file(), (page, ref)
        assert "integrity=" not in text
    # one shared copy per quality root, not one per night
    assert [p.name for p in (site.root.parent / "_assets").iterdir()] == [docs_assets._set_key()]


def test_no_assets_fetched_keeps_cdn_links_and_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRU4REC_DOCS_ASSETS", str(tmp_path / "nothing-here"))
    store = _site(tmp_path)
    text = store.docs_index.read_text()
    assert "https://code.jquery.com/jquery-3.7.1.min.js" in text
    assert "python -m jobs.quality.docs_assets fetch" in caplog.text
    assert not (tmp_path / "quality" / "_assets").exists()


class _Registry(http.server.BaseHTTPRequestHandler):
    tarball = b""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.tarball)))
        self.end_headers()
        self.wfile.write(self.tarball)

    def log_message(self, *args):
        pass


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_keeps_only_the_named_files_and_refuses_a_tarball_that_does_not_match(
    registry, tmp_path, monkeypatch
):
    tarball = _tarball(
        {
            "package/dist/x.min.js": b"x()",
            "package/src/big.js": b"source",
            # inside a kept folder by prefix, out of the package by its parts
            "package/webfonts/../../../escape.js": b"evil",
            "package/webfonts/a.woff2": b"font",
        }
    )
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    _Registry.tarball = tarball
    monkeypatch.setattr(
        docs_assets, "PACKAGES", {"@scope/x": ("1.0.0", digest, ("dist/x.min.js", "webfonts/"))}
    )
    root = docs_assets.fetch(tmp_path / "assets", registry)
    got = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name[0] != "."
    )
    assert got == ["@scope__x@1.0.0/dist/x.min.js", "@scope__x@1.0.0/webfonts/a.woff2"]
    assert not (tmp_path / "escape.js").exists() and docs_assets.missing(root) == []

    monkeypatch.setattr(
        docs_assets, "PACKAGES", {"y": ("2.0.0", "A" * 86 + "==", ("dist/x.min.js",))}
    )
    with pytest.raises(OSError, match=r"y@2\.0\.0 from .*expected sha512-A+==, found sha512-"):
        docs_assets.fetch(tmp_path / "assets", registry)
    assert docs_assets.missing(tmp_path / "assets") == ["y"]
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["@scope__x@1.0.0"]


def test_data_docs_render_in_a_browser_with_no_network(site, tmp_path, monkeypatch):
    monkeypatch.setenv("GRU4REC_DOCS_ASSETS", str(tmp_path / "never-fetched"))
    cdn = _site(tmp_path / "cdn")  # the same site as Great Expectations writes it
    with Browser(tmp_path / "browser") as b:
        # the browser really is offline: the CDN version loads none of its scripts
        b.get(cdn.docs_index.as_uri())
        b.wait("return document.readyState == 'complete'")
        assert "Data Docs" in b.js("return document.body.innerText")  # the page itself opened
        assert b.js("return typeof jQuery") == "undefined"
        b.console()  # drop the failed loads' messages
        b.get(site.docs_index.as_uri())
        rows = b.wait(
            "const r = Array.from(document.querySelectorAll('table tbody tr'))"
            "  .filter(x => x.cells.length == 6);"  # the validations table's columns
            "return r.length >= 2 && r.map(x => x.innerText);",
            what="the index table's rows (built by bootstrap-table)",
        )
        b.screenshot(ARTIFACTS / "data_docs_index_offline.png")
        state = b.js(
            "return {jq: typeof jQuery, table: typeof jQuery.fn.bootstrapTable,"
            " vega: typeof vegaEmbed,"
            " icons: document.fonts.check('900 16px \"Font Awesome 6 Free\"'),"
            " navbar: getComputedStyle(document.querySelector('nav.navbar')).display,"
            " logo: document.querySelector('nav img').naturalWidth}"
        )
        assert state == {
            "jq": "function",
            "table": "function",
            "vega": "function",
            "icons": True,
            "navbar": "flex",  # Bootstrap's stylesheet applied
            "logo": state["logo"],
        }, state
        assert state["logo"] > 0  # the logo came from the site's own copy
        # each validation row names the night and the dataset; one failed, one passed
        assert all("2026-01-05" in r for r in rows), rows
        assert any("raw_events" in r for r in rows) and any("sessions" in r for r in rows), rows
        page = next((site.docs_dir / "validations" / "raw_events").rglob("*.html"))
        assert "/2026-01-05/" in page.as_posix()
        b.get(page.as_uri())
        text = b.wait("return document.readyState == 'complete' && document.body.innerText")
        # the breadcrumb: suite / asset / run name / run time
        assert "Validations / raw_events / raw_events / 2026-01-05 /" in text, text[:1500]
        assert "Data asset: raw_events" in text, text[:1500]
        assert b.js("return getComputedStyle(document.querySelector('nav.navbar')).display") == (
            "flex"
        )
        b.screenshot(ARTIFACTS / "data_docs_validation_offline.png")
        errors = [m for m in b.console() if m.get("level") == "SEVERE"]
        assert not errors, errors
