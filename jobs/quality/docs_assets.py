"""Data Docs that render with no network.

Great Expectations' pages load Bootstrap, jQuery, bootstrap-table, Font Awesome, Vega and a
few more from public CDNs, and its logo from S3: on a machine without internet the index page
is empty (its table is built by bootstrap-table) and every page is unstyled. Here:

- `fetch` (run at install time by `./dev.sh` and the image: `python -m jobs.quality.docs_assets
  fetch`) downloads the exact versions those pages name from the npm registry, checks each
  tarball against the sha512 pinned below, and keeps only the files the pages use, in
  `assets_dir()` (`GRU4REC_DOCS_ASSETS`, default `<python prefix>/share/gru4rec/docs-assets`).
- `localize` (called after every Data Docs build) copies them once into the quality root
  (`<quality root>/_assets/<set>/`, shared by every night's site) and rewrites the pages just
  built to load them by relative paths, so the quality folder works from a file browser, a
  static web server or a copy on a laptop.

Where the assets were never fetched the pages keep their CDN links (they still work online)
and a warning says how to fetch them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import urllib.request
import uuid
from pathlib import Path, PurePosixPath

from jobs.common.localfs import write_text_atomic

log = logging.getLogger("jobs.quality")

REGISTRY = "https://registry.npmjs.org"

# npm package -> (version, sha512 of its tarball as the registry publishes it, files kept).
# A file ending in "/" keeps that folder (Font Awesome's CSS loads its fonts from ../webfonts/).
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "jquery": (
        "3.7.1",
        "m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
        ("dist/jquery.min.js",),
    ),
    "popper.js": (
        "1.12.9",
        "s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg==",
        ("dist/umd/popper.min.js",),
    ),
    "bootstrap": (
        "4.3.1",
        "rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag==",
        ("dist/css/bootstrap.min.css", "dist/js/bootstrap.min.js"),
    ),
    "bootstrap-table": (
        "1.19.1",
        "WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
        (
            "dist/bootstrap-table.min.css",
            "dist/bootstrap-table.min.js",
            "dist/extensions/filter-control/bootstrap-table-filter-control.css",
            "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
            "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
        ),
    ),
    "bootstrap-datepicker": (
        "1.9.0",
        "9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
        ("dist/css/bootstrap-datepicker.min.css", "dist/js/bootstrap-datepicker.min.js"),
    ),
    "@forevolve/bootstrap-dark": (
        "1.1.0",
        "A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
        ("dist/css/bootstrap-prefers-dark.css",),
    ),
    "@fortawesome/fontawesome-free": (
        "6.6.0",
        "60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
        ("css/all.min.css", "webfonts/"),
    ),
    "vega": (
        "5.33.1",
        "1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
        ("build/vega.min.js",),
    ),
    "vega-lite": (
        "5.23.0",
        "l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
        ("build/vega-lite.min.js",),
    ),
    "vega-embed": (
        "6.29.0",
        "PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
        ("build/vega-embed.min.js",),
    ),
}

# Each URL Great Expectations 1.24's templates write -> (package, file in the package).
URLS: dict[str, tuple[str, str]] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js",
        "dist/umd/popper.min.js",
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap",
        "dist/css/bootstrap.min.css",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap",
        "dist/js/bootstrap.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table",
        "dist/bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table",
        "dist/bootstrap-table.min.js",
    ),
    # the pages ask for the filter-control CSS of 1.19.0 and its script of 1.19.1: one
    # version (1.19.1) serves both, as the script and its CSS must match
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": (
        "bootstrap-datepicker",
        "dist/css/bootstrap-datepicker.min.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": (
        "bootstrap-datepicker",
        "dist/js/bootstrap-datepicker.min.js",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark",
        "dist/css/bootstrap-prefers-dark.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free",
        "css/all.min.css",
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": ("vega-lite", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": ("vega-embed", "build/vega-embed.min.js"),
}
# The navbar's logo, from S3 with a query string; every site has a copy under static/images/.
_LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"']*?/(logo-long\.png)[^\"']*")
# A tag that loads one of the URLs: its integrity/crossorigin attributes go with the CDN (a
# file:// page cannot make the CORS request that subresource integrity needs; the tarballs
# were checked against their sha512 instead).
# The site's own static files (GX links some one folder short from validation pages: the
# favicon), pointed at from each page's real depth.
_STATIC = re.compile(r"((?:src|href)=\")(?:\./|(?:\.\./)+)?static/([^\"]+)\"")
_SRI = re.compile(r"\s+(?:integrity|crossorigin)=\"[^\"]*\"")
_TAG = re.compile(r"<(?:script|link)\b[^>]*>")


def _unique() -> str:
    """A temporary name no other writer picks (hosts sharing the lake have their own pids)."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


def _set_key() -> str:
    """The name of this asset set in a quality root: changes when a version changes."""
    text = repr(sorted(PACKAGES.items()))
    return "gx-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def assets_dir() -> Path:
    default = Path(sys.prefix) / "share" / "gru4rec" / "docs-assets"
    return Path(os.environ.get("GRU4REC_DOCS_ASSETS") or default)


def _package_dir(root: Path, name: str) -> Path:
    return root / f"{name.replace('/', '__')}@{PACKAGES[name][0]}"


def missing(root: Path | None = None) -> list[str]:
    """Packages not (completely) fetched into `root`."""
    root = root or assets_dir()
    return [n for n in PACKAGES if not (_package_dir(root, n) / ".complete").is_file()]


def _wanted(name: str, member: str) -> str | None:
    """The path of a tarball member inside the package when it is kept, else None."""
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        return None
    rel = str(PurePosixPath(*path.parts[1:]))  # npm tarballs put files under package/
    keep = PACKAGES[name][2]
    if any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in keep):
        return rel
    return None


def _download(name: str, registry: str, timeout: float) -> bytes:
    version, integrity, _ = PACKAGES[name]
    base = name.rsplit("/", 1)[-1]
    url = f"{registry.rstrip('/')}/{name}/-/{base}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - https registry
        data = r.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise OSError(
            f"{name}@{version} from {url}: expected sha512-{integrity}, found sha512-{digest}"
        )
    return data


def fetch(root: Path | None = None, registry: str | None = None, timeout: float = 60) -> Path:
    """Download and keep every package not yet in `root`; returns `root`. Raises OSError
    naming the package when one cannot be downloaded or does not match its digest."""
    root = root or assets_dir()
    registry = registry or os.environ.get("GRU4REC_NPM_REGISTRY") or REGISTRY
    for name in missing(root):
        data = _download(name, registry, timeout)
        target = _package_dir(root, name)
        tmp = target.with_name(f".{target.name}.{_unique()}.tmp")
        kept = set()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                rel = _wanted(name, member.name)
                if rel is None or not member.isfile():
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
                kept.add(rel)
        lacking = [k for k in PACKAGES[name][2] if not k.endswith("/") and k not in kept]
        if lacking:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(f"{name}@{PACKAGES[name][0]}: the tarball has no {', '.join(lacking)}")
        (tmp / ".complete").write_text(PACKAGES[name][1] + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return root


def _install(quality_root: Path) -> Path | None:
    """The asset set inside `quality_root` (copied there once from `assets_dir()`), or None
    when the assets were never fetched."""
    target = quality_root / "_assets" / _set_key()
    if (target / ".complete").is_file():
        return target
    source = assets_dir()
    if missing(source):
        return None
    if target.exists():  # an incomplete copy (a partial sync): set it aside, copy again
        with contextlib.suppress(FileNotFoundError):
            os.replace(target, target.with_name(f".{target.name}.{_unique()}.incomplete"))
    tmp = target.with_name(f".{target.name}.{_unique()}.tmp")
    for name in PACKAGES:
        shutil.copytree(_package_dir(source, name), tmp / _package_dir(source, name).name)
    (tmp / ".complete").write_text("\n".join(f"{n}@{v[0]}" for n, v in PACKAGES.items()) + "\n")
    try:
        os.replace(tmp, target)
    except OSError:  # another writer installed the same set first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / ".complete").is_file():
            raise
    return target


_warned: set[str] = set()


def localize(site: Path, quality_root: Path, since: float | None = None) -> bool:
    """Rewrite the pages of the Data Docs `site` (those written at or after `since`, a
    time.time(); default all) to load their assets from the quality root's copy. False
    (pages unchanged, a warning logged once) when the assets were never fetched."""
    assets = _install(quality_root)
    if assets is None:
        key = str(assets_dir())
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "Data Docs assets are not in %s: the reports load them from public CDNs and "
                "need the network to render; fetch them once with "
                "`python -m jobs.quality.docs_assets fetch`",
                key,
            )
        return False
    for page in site.rglob("*.html"):
        try:
            if since is not None and page.stat().st_mtime < since:
                continue
            text = page.read_text(encoding="utf-8")
        except FileNotFoundError:  # removed meanwhile (a rerun's stale page)
            continue
        new = _rewrite(text, page.parent, assets, site)
        if new != text:
            write_text_atomic(page, new, encoding="utf-8")
    return True


def _rewrite(text: str, folder: Path, assets: Path, site: Path) -> str:
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, folder)).as_posix()

    def tag(match: re.Match) -> str:
        t = match.group(0)
        for url, (name, file) in URLS.items():
            for quote in ('"', "'"):
                if f"{quote}{url}{quote}" in t:
                    local = rel(assets / _package_dir(assets, name).name / file)
                    t = t.replace(f"{quote}{url}{quote}", f'"{local}"')
                    t = _SRI.sub("", t)
        return t

    text = _TAG.sub(tag, text)
    text = _LOGO.sub(lambda m: rel(site / "static" / "images" / m.group(1)), text)
    return _STATIC.sub(lambda m: f'{m.group(1)}{rel(site / "static" / m.group(2))}"', text)


def main(argv: list[str] | None = None) -> int:
    from jobs.common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m jobs.quality.docs_assets",
        description="Fetch the JavaScript and CSS of Great Expectations' Data Docs from the npm "
        "registry (pinned versions, sha512-checked), so the reports render with no network.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("command", choices=["fetch", "check"], help="fetch, or check only")
    parser.add_argument("--dir", default=None, help="where to keep them (GRU4REC_DOCS_ASSETS, else "
                        "<python prefix>/share/gru4rec/docs-assets)")  # fmt: skip
    parser.add_argument("--registry", default=None, help="npm registry URL (default: "
                        "GRU4REC_NPM_REGISTRY or https://registry.npmjs.org)")  # fmt: skip
    args = parser.parse_args(argv)
    root = Path(args.dir) if args.dir else assets_dir()
    if args.command == "check":
        lacking = missing(root)
        print(f"{root}: " + (f"missing {', '.join(lacking)}" if lacking else "complete"))
        return 1 if lacking else 0
    try:
        fetch(root, args.registry)
    except OSError as exc:
        print(f"docs_assets fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"Data Docs assets in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
