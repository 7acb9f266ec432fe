"""The deployment manifests (infra/) name only what the image built from infra/docker/Dockerfile
contains: every path under the image's project directory, every executor, database driver and
broker client (as the module that implements it, shipped by a distribution the image's pip
line installs, with every such distribution pinned in constraints.txt), every command."""

from __future__ import annotations

import functools
import importlib.metadata as md
import importlib.util
import posixpath
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"

# What a manifest names -> the module that must be in the image for it to work.
EXECUTORS = {
    "CeleryExecutor": "airflow.providers.celery.executors.celery_executor",
    "KubernetesExecutor": "airflow.providers.cncf.kubernetes.executors.kubernetes_executor",
    "LocalExecutor": "airflow.executors.local_executor",
}
URL_SCHEMES = {
    "postgresql+psycopg2://": "psycopg2",
    "postgresql://": "psycopg2",  # SQLAlchemy's default Postgres driver
    "db+postgresql://": "psycopg2",  # Celery's result backend through SQLAlchemy
    "redis://": "redis",
}
COMMANDS = {"airflow celery worker": "airflow.providers.celery.cli.celery_command"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def image_files(dockerfile: str) -> set[str]:
    """Absolute paths of the project files COPY puts in the image (and their directories)."""
    workdir, files = "/", set()
    for word, args in _instructions(dockerfile):
        if word == "WORKDIR":
            workdir = args
        elif word == "COPY" and not args.startswith("--from"):
            *sources, dest = shlex.split(args)
            base = posixpath.normpath(posixpath.join(workdir, dest))
            for src in sources:
                path = ROOT / src
                if path.is_file():
                    target = (
                        f"{base}/{path.name}" if len(sources) > 1 or dest.endswith("/") else base
                    )
                    files.add(target)
                for f in path.rglob("*") if path.is_dir() else ():
                    if f.is_file() and "__pycache__" not in f.parts:
                        files.add(f"{base}/{f.relative_to(path)}")
    return files | {str(p) for f in files for p in Path(f).parents}


def image_extras(dockerfile: str) -> set[str]:
    """The project's extras the image installs (`pip install ... ".[a,b]"`), expanded."""
    extras: set[str] = set()
    for word, args in _instructions(dockerfile):
        if word == "RUN":
            for m in re.finditer(r"pip install [^&]*?[\"']?\.\[([\w,]+)\]", args):
                extras |= set(m.group(1).split(","))
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = table["optional-dependencies"]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional.get(extra, []):
            m = re.match(rf"{re.escape(table['name'])}\[([\w,]+)\]", req)
            todo += m.group(1).split(",") if m else []
    return seen


def image_distributions(dockerfile: str) -> set[str]:
    """Every distribution the image's pip line installs: the project's dependencies and its
    extras', and theirs, as resolved in this environment (installed from the same pins)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(table["dependencies"])
    for extra in image_extras(dockerfile):
        reqs += [r for r in table["optional-dependencies"].get(extra, []) if "[" not in r]
    todo = [re.match(r"[\w.-]+", r).group(0) for r in reqs]
    todo.append("torch")  # the Dockerfile's first pip install
    found: set[str] = set()
    while todo:
        name = _norm(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found.add(name)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.match(r"[\w.-]+", req).group(0))
    return found


@functools.cache
def providing_distribution(module: str) -> str | None:
    """The installed distribution whose files include `module`'s source, or None."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    candidates = md.packages_distributions().get(module.split(".")[0], [])
    for name in candidates:
        dist = md.distribution(name)
        for f in dist.files or []:
            same_name = str(f).endswith(".py") and origin.name == Path(str(f)).name
            if same_name and Path(dist.locate_file(f)).resolve() == origin:
                return _norm(dist.metadata["Name"])
    return None


def manifests() -> dict[str, str]:
    paths = [DOCKERFILE, *sorted(INFRA.rglob("*.yaml")), *sorted(INFRA.rglob("*.yml"))]
    paths += sorted(INFRA.rglob(".env.example")) + sorted(INFRA.rglob("*.sh"))
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def project_dir(dockerfile: str) -> str:
    return next(a for w, a in _instructions(dockerfile) if w == "WORKDIR")


def named_paths(texts: dict[str, str], prefix: str) -> set[tuple[str, str]]:
    """(manifest, path) for every path under the image's project directory a manifest names."""
    pattern = re.compile(re.escape(prefix.rstrip("/")) + r"(?:/[\w.\-]+)*")
    return {(name, m.group(0)) for name, text in texts.items() for m in pattern.finditer(text)}


def named_modules(texts: dict[str, str]) -> set[tuple[str, str, str]]:
    """(manifest, what it names, module) for every executor, URL scheme and command."""
    out = set()
    for name, text in texts.items():
        for what, module in {**EXECUTORS, **URL_SCHEMES, **COMMANDS}.items():
            if re.search(rf"(?<![\w+]){re.escape(what)}", text):
                out.add((name, what, module))
    return out


def run_modules(texts: dict[str, str]) -> set[tuple[str, str]]:
    """(manifest, module) for every `python -m <module>` of this project a manifest runs."""
    return {
        (name, m)
        for name, text in texts.items()
        for m in re.findall(r"python -m ((?:jobs|gru4rec|dags)(?:\.\w+)*)", text)
    }


# URL schemes that name no Python module in the image (services, Spark masters, storage).
PLAIN_SCHEMES = {"http", "https", "k8s", "spark", "s3a", "file", "hdfs"}


def unknown_names(texts: dict[str, str]) -> list[str]:
    """Executors and URL schemes the manifests use that this check has no module for: a
    new one must be added to the tables above, or it would pass unchecked."""
    out = []
    for name, text in texts.items():
        for executor in sorted(set(re.findall(r"\b(\w+Executor)\b", text)) - set(EXECUTORS)):
            out.append(f"{name} uses {executor}, which this check does not know")
        for scheme in sorted(set(re.findall(r"\b([a-z][\w+.-]*)://", text))):
            if scheme not in PLAIN_SCHEMES and f"{scheme}://" not in URL_SCHEMES:
                out.append(f"{name} uses {scheme}:// URLs, which this check does not know")
    return out


def untracked_copies(dockerfile: str) -> list[str]:
    """COPY sources git does not track (a clean clone, which builds the image, lacks them)."""
    import subprocess

    out = []
    for word, args in _instructions(dockerfile):
        if word == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                tracked = subprocess.run(["git", "ls-files", "--", src], cwd=ROOT,
                                         capture_output=True, text=True).stdout  # fmt: skip
                if not tracked.strip():
                    out.append(f"the Dockerfile copies {src}, which git does not track")
    return out


def missing_from_image(dockerfile: str, texts: dict[str, str]) -> list[str]:
    """What the manifests name that the image would not have, each said plainly."""
    problems = unknown_names(texts) + untracked_copies(dockerfile)
    files = image_files(dockerfile)
    for name, path in sorted(named_paths(texts, project_dir(dockerfile))):
        if path not in files:
            problems.append(f"{name} names {path}, which the Dockerfile does not copy")
    project = project_dir(dockerfile)
    for name, module in sorted(run_modules(texts)):
        path = f"{project}/{module.replace('.', '/')}"
        if f"{path}.py" not in files and f"{path}/__main__.py" not in files:
            problems.append(f"{name} runs python -m {module}, which the image does not contain")
    dists = image_distributions(dockerfile)
    pins = {_norm(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().split()
            if "==" in line}  # fmt: skip
    for name, what, module in sorted(named_modules(texts)):
        dist = providing_distribution(module)
        if dist is None:
            problems.append(f"{name} uses {what}: module {module} is not installed anywhere")
        elif dist not in dists:
            problems.append(f"{name} uses {what}: {module} comes from {dist}, which the "
                            f"image's pip line does not install")  # fmt: skip
        elif dist not in pins and dist != "gru4rec-pipeline":
            problems.append(f"{name} uses {what}: {dist} is not pinned in constraints.txt")
    return problems


def test_every_path_and_module_the_manifests_name_is_in_the_image():
    texts = manifests()
    dockerfile = texts["infra/docker/Dockerfile"]
    # what this checks occurs: paths and modules are named, in several manifests
    assert {p for _, p in named_paths(texts, "/opt/gru4rec")} >= {
        "/opt/gru4rec/dags",
        "/opt/gru4rec/infra/k8s/gpu-pod-template.yaml",
    }
    assert ("infra/compose/docker-compose.yml", "jobs.nightly.auth") in run_modules(texts)
    assert ("infra/docker/Dockerfile", "jobs.quality.docs_assets") in run_modules(texts)
    kinds = {what for _, what, _ in named_modules(texts)}
    assert {"CeleryExecutor", "KubernetesExecutor", "redis://", "postgresql+psycopg2://"} <= kinds
    assert missing_from_image(dockerfile, texts) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.replace("COPY infra/k8s ./infra/k8s\n", ""),
         "names /opt/gru4rec/infra/k8s/gpu-pod-template.yaml, which the Dockerfile does not copy"),
        (lambda d: d.replace('".[deploy]"', "."),
         "uses CeleryExecutor: airflow.providers.celery.executors.celery_executor comes from "
         "apache-airflow-providers-celery, which the image's pip line does not install"),
        (lambda d: d.replace('".[deploy]"', '".[celery,postgres]"'),
         "uses KubernetesExecutor"),
        (lambda d: d + "ENV AIRFLOW__CORE__EXECUTOR=EdgeExecutor\n",
         "uses EdgeExecutor, which this check does not know"),
        (lambda d: d + "ENV BROKER=amqp://rabbit:5672\n",
         "uses amqp:// URLs, which this check does not know"),
        (lambda d: d.replace("COPY infra/k8s ./infra/k8s", "COPY infra/k8s/nope.yaml ./x"),
         "copies infra/k8s/nope.yaml, which git does not track"),
        (lambda d: d.replace("COPY jobs ./jobs", "COPY jobs/common ./jobs/common"),
         "runs python -m jobs.quality.docs_assets, which the image does not contain"),
    ],
    ids=["a file not copied", "no providers", "no kubernetes provider", "unknown executor",
         "unknown broker", "untracked source", "a module not copied"],
)  # fmt: skip
def test_a_manifest_naming_what_the_image_lacks_is_caught(edit, expected):
    texts = manifests()
    broken = edit(texts["infra/docker/Dockerfile"])
    assert broken != texts["infra/docker/Dockerfile"]
    problems = missing_from_image(broken, {**texts, "infra/docker/Dockerfile": broken})
    assert any(expected in p for p in problems), problems


def test_the_report_templates_ship_in_the_package(tmp_path):
    """`pip install .` (the image) gets every Jinja2 template the reports render from."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    for name in ("jobs", "gru4rec", "dags"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".j2")}
    templates = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/templates/*.j2")}
    assert len(templates) >= 3 and templates <= shipped
