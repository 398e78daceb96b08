"""The package as users install it: the sdist and the wheel that `python -m build` makes, checked by twine,
the wheel installed (not editable) into a fresh virtual environment that reuses this environment's torch and
other dependencies, and run from a folder outside the repository. What it prints must match the checkout."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import fcpose
from fcpose.assets import SCENE, asset

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCES = (".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
               ".device", "demo_out", "out", "runs")
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}  # port 9: closed


def run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")}
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**clean, **(env or {})}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def build(source: Path, out: Path, *what: str) -> dict[str, Path]:
    """``python -m build`` without isolation (offline: the backend comes from the dev extra); no option = the
    sdist, then the wheel built from that sdist, as a release is made. Returns ``{".gz" | ".whl": path}``."""
    run([sys.executable, "-m", "build", "--no-isolation", *what, "-o", out, source], cwd=source)
    return {p.suffix: p for p in out.iterdir()}


def fresh_venv(root: Path) -> Path:
    """A virtual environment without pip whose only site-packages extra is a view of this environment's
    (every distribution but fcpose itself), so torch is reused, not downloaded again. Returns its python."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = root / "deps"
    view.mkdir()
    for entry in site.iterdir():
        if "fcpose" not in entry.name and not entry.name.startswith("__editable__"):
            (view / entry.name).symlink_to(entry)
    run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    venv_site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout
    (Path(venv_site.strip()) / "_fcpose_test_deps.pth").write_text(f"{view}\n")
    return python


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """Built once: the release (sdist, wheel from it), a wheel built straight from the tree, the installed venv."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    release = build(source, root / "release")
    sdist, wheel = release[".gz"], release[".whl"]
    direct = build(source, root / "direct", "--wheel")[".whl"]
    python = fresh_venv(root)
    pip = [sys.executable, "-m", "pip", "--python", python]
    run([*pip, "install", "--no-index", "--quiet", wheel], cwd=root)  # --no-index: every dependency already there
    run([*pip, "check"], cwd=root)  # ... and satisfies what the wheel declares
    (root / "work").mkdir()
    return {"root": root, "sdist": sdist, "wheel": wheel, "direct": direct, "python": python, "work": root / "work"}


def test_twine_passes_and_the_sdist_builds_the_same_wheel(dist):
    assert dist["sdist"].name == f"fcpose-{fcpose.__version__}.tar.gz"
    assert dist["wheel"].name == f"fcpose-{fcpose.__version__}-py3-none-any.whl"
    run([sys.executable, "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"]], cwd=dist["root"])

    def record(wheel: Path) -> list[str]:  # name, hash and size of every file
        with zipfile.ZipFile(wheel) as z:
            return sorted(z.read(next(n for n in z.namelist() if n.endswith("dist-info/RECORD"))).decode().split())
    assert record(dist["wheel"]) == record(dist["direct"])


def test_the_wheel_holds_every_file_of_the_package(dist):
    """Every file under fcpose/ in the checkout (code, presets, bundled assets, the web page) is in the wheel."""
    package = {p.relative_to(REPO).as_posix() for p in (REPO / "fcpose").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
    assert package - names == set()
    assert {"fcpose/assets/fcpose_synth_demo.pt", "fcpose/serve/static/index.html"} <= names


def test_licence_notices_and_changelog_ship(dist):
    info = f"fcpose-{fcpose.__version__}.dist-info/licenses/"
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
        metadata = z.read(f"fcpose-{fcpose.__version__}.dist-info/METADATA").decode()
    assert {info + "LICENSE", info + "NOTICE", info + "fcpose/assets/README.md"} <= names
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.10" in metadata
    with tarfile.open(dist["sdist"]) as t:
        top = {Path(n).relative_to(f"fcpose-{fcpose.__version__}").as_posix() for n in t.getnames()}
    assert {"LICENSE", "NOTICE", "CHANGELOG.md", "README.md", "fcpose/assets/README.md"} <= top
    assert (REPO / "LICENSE").read_text().startswith("\n                                 Apache License")


def test_installed_package_runs_outside_the_repository_like_the_checkout(dist, tmp_path):
    """From an empty folder, offline: --version, the demo, predict on the bundled scene and one API call; the
    people found are those the checkout finds."""
    python, work = dist["python"], dist["work"]
    fcpose_bin = python.parent / "fcpose"
    assert run([fcpose_bin, "--version"], cwd=work).stdout.strip() == f"fcpose {fcpose.__version__}"
    demo = run([python, "-m", "fcpose.demo", "--out", "demo"], cwd=work, env={**OFFLINE, "FCPOSE_CACHE": "cache"})
    assert "could not be downloaded" in demo.stderr.splitlines()[0]
    scene = run([python, "-c", "from fcpose.assets import asset, SCENE; print(asset(SCENE))"], cwd=work).stdout
    assert Path(scene.strip()).is_relative_to(dist["root"] / "venv")
    run([fcpose_bin, "predict", scene.strip(), "--weights", "fcpose_synth_demo", "--out", "pred", "--no-progress"],
        cwd=work)
    api = ("import json, fcpose; from fcpose.assets import asset, SCENE\n"
           "people = fcpose.Predictor.from_checkpoint('fcpose_synth_demo')(str(asset(SCENE))).people()\n"
           "print(json.dumps({'file': fcpose.__file__, 'scores': people.scores.tolist()}))")
    installed = json.loads(run([python, "-c", api], cwd=work).stdout)
    assert Path(installed["file"]).is_relative_to(dist["root"] / "venv")

    run([sys.executable, "-m", "fcpose", "predict", asset(SCENE), "--weights", "fcpose_synth_demo", "--out",
         tmp_path / "pred", "--no-progress"], cwd=REPO)
    checkout = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert json.loads((work / "pred" / "predictions.json").read_text()) == checkout
    assert json.loads((work / "demo" / "predictions.json").read_text()) == checkout
    scores = [r["score"] for r in checkout]  # the API's people: among the detections predict wrote
    assert installed["scores"] and all(min(abs(s - t) for t in scores) < 1e-6 for s in installed["scores"])
    assert (work / "demo" / "sample.jpg").is_file() and not any((work / "cache").glob("*"))  # nothing downloaded
