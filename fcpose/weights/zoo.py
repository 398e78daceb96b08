"""Model zoo: names that stand for released checkpoints, downloaded on first use.

``fcpose predict --weights fcpose_r50_official`` (or ``Predictor.from_checkpoint("fcpose_r50_official")``) looks for the
file in the cache folder (``$FCPOSE_CACHE``, default ``~/.cache/fcpose``), downloads it there over plain HTTPS if it is
absent (to a temporary file, renamed when complete) and returns its path. The official files are AdelaiDet checkpoints,
converted on loading. Without network access it fails with one line saying where to put the file by hand.
``fcpose_synth_demo`` ships inside the package (:mod:`fcpose.assets`): no cache, no download.

Verification (for an entry with a recorded ``size`` and ``sha256``, as both official files have):

- a download whose size or SHA-256 differs from the record is deleted and is one :class:`CheckpointError`
  line (nothing is left in the cache);
- a file already in the cache (downloaded earlier or put there by hand) has its size checked on every use (one ``stat``)
  and its SHA-256 once: the verified hash is remembered in a marker file next to it, ``.<filename>.verified``, together
  with the file's size and modification time; if the file changes, it is hashed again. A cached file that fails either
  check is left in place (it may be the user's own copy) and the error says to delete it."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..assets import DEMO_MODEL, asset
from ..errors import CheckpointError
from ..fileio import default_file_mode

HF_BASE = "https://huggingface.co/ZjuCv/AdelaiDet/resolve/main/"


@dataclass(frozen=True)
class ZooEntry:
    """One model-zoo checkpoint: its name, where it comes from and what it must be.

    Args:
        name: The zoo name, as ``--weights`` and ``Predictor.from_checkpoint`` take it.
        filename: The file's name in the cache folder (or in ``fcpose.assets`` when bundled).
        url: Where it is downloaded from; ``None``: it ships inside the package.
        preset: The preset it runs; ``None``: its config lives in the checkpoint only.
        sha256: The file's SHA-256, checked after the download and on use; ``None``: not checked.
        description: What the checkpoint is, in one line.
        size: The file's size in bytes, checked after the download; ``None``: not checked.
    """

    name: str
    filename: str  # file name in the cache folder
    url: str | None  # None: the file ships inside the package (fcpose.assets), nothing to download
    preset: str | None  # the preset it runs (None: its config lives in the checkpoint only)
    sha256: str | None = None  # None: not checked (the hash is printed after the download)
    description: str = ""
    size: int | None = None  # bytes; None: not checked


MODEL_ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry("fcpose_r50_official", "fcpose50.pth", HF_BASE + "fcpose50.pth", "fcpose_r50_official",
                 sha256="b9dfd9758e499e0d64561bc2c9b4fdcdea5402d8f62429412088e818f6badc5a", size=330_645_960,
                 description="AdelaiDet FCPose_R50_3x, 65.2 keypoint AP (COCO val2017)"),
        ZooEntry("fcpose_r101_official", "fcpose101.pth", HF_BASE + "fcpose101.pth", "fcpose_r101_official",
                 sha256="97f5ca289e2400da07564c3d5dfc289071628f9f7c23953238556dfdb4547802", size=482_703_626,
                 description="AdelaiDet FCPose_R101_3x, 67.0 keypoint AP (COCO val2017)"),
        ZooEntry("fcpose_synth_demo", DEMO_MODEL, None, None,
                 description="half-width ResNet-18 + GN trained on synthetic scenes only, for trying the tools"),
    )
}


def cache_dir() -> Path:
    """``$FCPOSE_CACHE`` if set, else ``~/.cache/fcpose``.

    Returns:
        The folder downloads are kept in.
    """
    env = os.environ.get("FCPOSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fcpose"


def is_zoo_name(name: str | os.PathLike) -> bool:
    return isinstance(name, str) and name in MODEL_ZOO


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` through a temporary file in the same folder; returns the SHA-256. Raises
    ``OSError``/``urllib.error.URLError`` on network problems (nothing is left behind)."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.fchmod(fd, default_file_mode())  # the cached file gets the user's usual mode, not mkstemp's 0o600
    h = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "fcpose"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            print(f"downloading {url} to {dest}", file=sys.stderr)  # only once connected: offline = one line
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress, file=sys.stderr) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return h.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamp(path: Path, digest: str) -> str:
    st = path.stat()
    return f"{digest} {st.st_size} {st.st_mtime_ns}\n"


def _remember(path: Path, digest: str) -> None:
    """Record that ``path`` (as it is now) has SHA-256 ``digest``; best effort (a read-only cache just
    means hashing again next time)."""
    try:
        _marker(path).write_text(_stamp(path, digest))
    except OSError:
        pass


def verify_cached(entry: ZooEntry, path: Path) -> None:
    """Check a cached file against ``entry``: its size every time, its SHA-256 once (see the module
    docstring). Raises :class:`CheckpointError` (one line) on a mismatch; the file is left in place."""
    if entry.size is not None and (actual := path.stat().st_size) != entry.size:
        raise CheckpointError(f"{path} is {actual:,} bytes, but {entry.name} is {entry.size:,} bytes (an incomplete "
                              f"or different file); delete it to download it again")
    if not entry.sha256:
        return
    marker = _marker(path)
    try:
        if marker.read_text() == _stamp(path, entry.sha256):
            return
    except OSError:
        pass
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise CheckpointError(f"{path} has SHA-256 {digest}, but {entry.name} has {entry.sha256} (a different or "
                              f"damaged file); delete it to download it again")
    _remember(path, digest)


def fetch(name: str, *, progress: bool = True) -> Path:
    """Path of the zoo checkpoint ``name`` in the cache, downloading it first if needed (and checking its
    size and SHA-256 when the entry records them).

    Args:
        name: A model-zoo name (``MODEL_ZOO``).
        progress: Show a progress bar while downloading.

    Returns:
        The checkpoint file.

    Raises:
        CheckpointError: An unknown name, a failed download, or a file whose size or SHA-256 is not the recorded one.
    """
    if name not in MODEL_ZOO:
        raise CheckpointError(f"unknown model-zoo name '{name}' (known: {', '.join(sorted(MODEL_ZOO))})")
    entry = MODEL_ZOO[name]
    if entry.url is None:
        return asset(entry.filename)
    path = cache_dir() / entry.filename
    if path.is_file():
        verify_cached(entry, path)
        return path
    try:
        digest = download(entry.url, path, progress=progress)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = str(getattr(exc, "reason", None) or exc).strip().splitlines()
        reason = reason[0] if reason else type(exc).__name__
        error = CheckpointError(f"cannot download {name} from {entry.url} ({reason});"
                                f" download it by hand and save it as {path} (or set FCPOSE_CACHE to the folder "
                                f"that holds {entry.filename})")
        error.reason = reason  # the network's reason alone, for callers that fall back (make demo)
        raise error from None
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        path.unlink(missing_ok=True)
        raise CheckpointError(f"the download of {name} from {entry.url} is {size:,} bytes, expected {entry.size:,}; "
                              f"the file was deleted")
    if entry.sha256 and digest != entry.sha256:
        path.unlink(missing_ok=True)
        raise CheckpointError(f"the download of {name} has SHA-256 {digest}, expected {entry.sha256}; the file "
                              f"was deleted")
    if entry.sha256:
        _remember(path, digest)
    print(f"saved {path} (sha256 {digest}{', verified' if entry.sha256 else ''})", file=sys.stderr)
    return path


def resolve_weights(weights: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the cached file of a model-zoo name (a file of that name wins).

    Args:
        weights: A checkpoint path or a model-zoo name.

    Returns:
        The file to load (not checked to exist when it is a path).

    Raises:
        CheckpointError: Fetching a zoo checkpoint failed.
    """
    path = Path(weights)
    if is_zoo_name(weights) and not path.exists():
        return fetch(str(weights))
    return path

