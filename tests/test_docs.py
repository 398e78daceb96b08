"""The documentation site (mkdocs.yml) builds in strict mode, so a broken link, a renamed function the API
reference names or a docstring griffe cannot match to its signature fails here. mkdocstrings reads the source
without importing it: neither torch nor fcpose is imported by the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocstrings_handlers.python", reason="the docs packages of the dev extra are not installed")


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=120)


def test_site_builds_strict_with_reference_and_links(tmp_path):
    site = tmp_path / "site"
    run = _mkdocs_build(ROOT / "mkdocs.yml", site)
    assert run.returncode == 0, run.stderr
    reference = (site / "docs" / "reference" / "fcpose" / "index.html").read_text(encoding="utf-8")
    assert 'id="fcpose.Predictor"' in reference
    assert 'id="fcpose.Predictor.from_checkpoint"' in reference
    assert "score_threshold" in reference and "min_size" in reference  # Predictor's parameters
    assert ":class:" not in reference  # docstrings' Sphinx roles are shown as code (docs/mkdocs_hooks.py)
    # README links, resolved in the site as in a checkout: a guide and a non-Markdown file it shows
    assert (site / "docs" / "serving" / "index.html").is_file()
    assert (site / "benchmarks" / "results" / "people.png").is_file()
    assert not list(site.rglob("mkdocs_hooks*"))  # the build's hook is not published
    assert (site / "css" / "theme.css").is_file() and (site / "search" / "main.js").is_file()  # the theme stays


@pytest.mark.parametrize("page, culprit", [
    ("See [the guide](docs/missing.md).\n", "docs/missing.md"),
    ("See [below](#no-such-section).\n", "no-such-section"),
    ("::: fcpose.no_such_function\n", "fcpose.no_such_function"),
    ("::: renamed.scale\n", "Parameter 'factor' does not appear in the function signature"),
])
def test_strict_build_fails_on_broken_reference(tmp_path, page, culprit):
    """A checkout of one page: a broken link or anchor, an API name that does not exist, or a docstring naming a
    parameter its function no longer has, fails the build."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    del config["nav"], config["watch"]  # this checkout has one page
    config["hooks"] = [str(ROOT / path) for path in config["hooks"]]
    mkdocstrings = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    mkdocstrings["handlers"]["python"]["paths"] = [str(ROOT), str(tmp_path)]
    # a parameter renamed in the signature but not in the docstring
    (tmp_path / "renamed.py").write_text('def scale(x, ratio):\n    """Scale.\n\n    Args:\n        x: A number.\n'
                                         '        factor: The factor.\n    """\n', encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Home\n\n" + page, encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    run = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert run.returncode != 0
    assert culprit in run.stderr
