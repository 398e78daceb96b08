"""Ctrl-C (SIGINT) to a running command leaves complete, valid files or none, and exits with 130."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _default_sigint():
    """In the child: Ctrl-C's default action. A suite started as a background job (``cmd &`` in a script) hands its
    children an ignored SIGINT, and Python then installs no KeyboardInterrupt handler: the signal would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fcpose", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _wait_for(proc, condition, what, limit=300.0):
    """Poll until ``condition()`` holds (a file appeared); the limit only guards against a hung process."""
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended (status {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {limit} s")
        time.sleep(0.05)


def _interrupt(proc):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))  # temporary files are hidden (.name.part / .name.*.tmp)


def test_sigint_to_predict_leaves_valid_files(tiny_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):  # far more than run before the signal arrives
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(images / f"{i:04d}.png")
    out = tmp_path / "out"
    proc = _start(["predict", str(images), "--weights", str(tiny_checkpoint), "--out", str(out), "--no-progress",
                   "--batch-size", "1"], tmp_path)
    _wait_for(proc, lambda: out.is_dir() and any(out.glob("*.jpg")), "a rendered image")
    code, err = _interrupt(proc)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "fcpose predict: interrupted", err
    assert "Traceback" not in err
    rendered = sorted(out.glob("*.jpg"))
    assert 0 < len(rendered) < 300
    for path in rendered:  # every image there is whole
        with Image.open(path) as im:
            im.load()
    if (out / "predictions.json").exists():
        json.loads((out / "predictions.json").read_text())
    assert _leftovers(out) == []
