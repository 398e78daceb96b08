"""MkDocs hook (``hooks:`` in mkdocs.yml): the site's pages are the repository's own Markdown files, at their
repository paths, so every relative link resolves in the site exactly as in a checkout and MkDocs' link
validation (strict mode: a failure) checks it. README.md is the home page; the non-Markdown files the pages link
to (plots, results JSON) are copied as they are. Only what is listed here is published (not this file).
The docstrings' Sphinx roles (``:class:`~fcpose.Predictor` ``) are shown as the code they name."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

PAGES = ["README.md", "CHANGELOG.md", "docs/**/*.md", "benchmarks/README.md", "fcpose/assets/README.md"]
LINK = re.compile(r"\]\(([^)\s#]+)")  # the path of a Markdown link or image, before any #anchor
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc):<code>(~?)([^<]*)</code>")  # as rendered from a docstring


def _pages(root: Path) -> list[Path]:
    found = [path for pattern in PAGES for path in sorted(root.glob(pattern)) if path.is_file()]
    return list(dict.fromkeys(found))


def _linked_files(page: Path, root: Path) -> set[Path]:
    """The repository files other than Markdown that ``page`` links to (missing ones are left to MkDocs)."""
    targets = set()
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        if ":" in link or link.startswith("/"):
            continue  # a URL or an absolute path: not a repository file
        target = (page.parent / link).resolve()
        if target.suffix != ".md" and target.is_file() and target.is_relative_to(root):
            targets.add(target)
    return targets


def on_files(files: Files, config) -> Files:
    """Replace MkDocs' files from docs_dir with the repository's pages and what they link to (the theme's CSS,
    JavaScript and search files stay)."""
    root = Path(config.config_file_path).resolve().parent  # the repository: mkdocs.yml is at its root
    pages = _pages(root)
    linked = sorted(set().union(*(_linked_files(page, root) for page in pages)))
    docs_dir = str(Path(config["docs_dir"]).resolve())
    site = Files([f for f in files if f.src_dir is None or str(Path(f.src_dir).resolve()) != docs_dir])
    for path in pages + linked:
        site.append(File(path.relative_to(root).as_posix(), str(root), config["site_dir"],
                         config["use_directory_urls"]))
    return site


def on_page_content(html: str, page, config, files) -> str:
    """``:role:`name` `` -> ``name`` as code; ``~a.b.name`` shows ``name``, as in Sphinx."""
    return ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)
