"""`fcpose predict` under torchrun (2 gloo processes on the CPU): the same predictions.json and renders as one
process, and a process that fails leaves no predictions.json and no half-written file; `fcpose eval` likewise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# Loaded by every process of a torchrun test (sitecustomize): rank 0 writes its files 2 s late, the time a large
# predictions.json takes. torchrun stops every process once one exits with a non-zero status, so a process that
# leaves before rank 0 has written would lose the file.
_SLOW_RANK0 = """
import os, time
if os.environ.get("RANK") == "0":
    import fcpose.fileio as fileio
    write = fileio.atomic_write_text
    def slow(*args, **kwargs):
        time.sleep(2.0)
        return write(*args, **kwargs)
    fileio.atomic_write_text = slow
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _fcpose(args: list[str], nproc: int, slow_rank0: Path | None = None) -> subprocess.CompletedProcess:
    """``fcpose ARGS`` in one process or under torchrun; ``slow_rank0``: a folder for the _SLOW_RANK0 hook."""
    env = _env()
    if slow_rank0 is not None:
        slow_rank0.mkdir(exist_ok=True)
        (slow_rank0 / "sitecustomize.py").write_text(_SLOW_RANK0)
        env["PYTHONPATH"] = f"{slow_rank0}{os.pathsep}{env['PYTHONPATH']}"
    if nproc == 1:
        launch = [sys.executable, "-m", "fcpose"]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
                  "127.0.0.1", "--master_port", str(port), "-m", "fcpose"]
    return subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=300)


def _image(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _clip(path: Path, frames: int = 5) -> Path:
    from fcpose.data.video import VideoWriter

    rng = np.random.default_rng(7)
    with VideoWriter(path, fps=10, width=80, height=64) as writer:
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    return path


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_two_processes_write_what_one_process_writes(tiny_checkpoint, tmp_path):
    """A folder, a list of files (one with a name the folder also has) and a video, in batches of 2 with an
    unreadable image among them: predictions.json (ids, order, values) and the rendered images are byte for byte
    one process's; the video's render has the same name; each process says its own lines, rank 0 the summary."""
    folder = tmp_path / "in"
    for i, size in enumerate([(96, 80), (96, 80), (64, 112), (96, 80), (96, 80)]):
        _image(folder / f"{i + 1}.png", size, seed=i)
    (folder / "6_broken.png").write_bytes(b"not an image")
    listed = [_image(tmp_path / "more" / "1.png", (96, 80), seed=10), _image(tmp_path / "more" / "b.jpg", (72, 96), 11)]
    video = _clip(tmp_path / "clip.mp4")
    common = ["--weights", str(tiny_checkpoint), "--score-threshold", "0.05", "--batch-size", "2", "--size", "96",
              "--max-size", "128", "--no-progress"]
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        done = _fcpose(["predict", str(folder), *map(str, listed), str(video), "--out", str(out), *common], nproc,
                       slow_rank0=tmp_path / "hook")
        assert done.returncode == 1, done.stderr  # the broken image is reported, everything else is done
        runs[nproc] = (_files(out), done.stderr)
    (one, err1), (two, err2) = runs[1], runs[2]
    assert sorted(one) == sorted(two) == sorted(["1.jpg", "1_1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "b.jpg",
                                                 "clip.mp4", "predictions.json"])
    results = json.loads(one["predictions.json"])
    assert len(results) > 0 and {r["file_name"] for r in results} >= {"1.png", "b.jpg", "clip.mp4"}
    assert two["predictions.json"] == one["predictions.json"]
    for name in one:
        if name.endswith(".jpg"):
            assert two[name] == one[name], name
    lines = err2.splitlines()
    for rank in (0, 1):
        assert any(line.startswith(f"[rank {rank}] ") and " ms" in line for line in lines), err2
    assert sum("6_broken.png" in line for line in lines) == 1, err2
    assert sum("-> " in line and "predictions.json" in line for line in lines) == 1, err2
    assert sum("1 of " in line and "input(s) failed" in line for line in lines) == 1, err2
    assert sum("1 of " in line and "input(s) failed" in line for line in err1.splitlines()) == 1, err1


def test_a_process_that_fails_leaves_no_predictions(tiny_checkpoint, tmp_path):
    """Rank 1's second image renders to OUT/2.jpg, which is a folder: a hard error for that process (as for one
    process). It says it once; no predictions.json is written and no temporary file is left; the renders that were
    written are complete."""
    folder = tmp_path / "in"
    for i in range(6):
        _image(folder / f"{i}.png", (96, 80), seed=i)
    out = tmp_path / "out"
    (out / "3.jpg").mkdir(parents=True)  # images 1, 3, 5 are rank 1's (batches of 1)
    args = [str(folder), "--out", str(out), "--weights", str(tiny_checkpoint), "--batch-size", "1", "--size", "96",
            "--max-size", "128", "--no-progress"]
    done = _fcpose(["predict", *args], 2)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "cannot save image" in line]
    assert len(errors) == 1 and errors[0].startswith("fcpose predict: error:") and "3.jpg" in errors[0], done.stderr
    assert not (out / "predictions.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    for path in out.glob("*.jpg"):
        if path.is_file():
            with Image.open(path) as im:
                im.load()  # complete


def test_eval_under_two_processes_scores_like_one_process(coco_tiny, tiny_checkpoint, tmp_path):
    """`fcpose eval` under torchrun: the metrics file is one process's, and the image rank 1 could not read is
    counted in rank 0's summary and fails every process alike (exit 1); a set-up error is said once."""
    import shutil

    from fcpose.engine.evaluate import dataset_images

    images = Path(shutil.copytree(coco_tiny, tmp_path / "images"))
    ann = images / "person_keypoints.json"
    broken = dataset_images(ann, images)[1][1]  # the first image of rank 1's share
    broken.write_bytes(b"not an image")
    metrics = {}
    for nproc in (1, 2):
        out = tmp_path / f"m{nproc}.json"
        done = _fcpose(["eval", "--weights", str(tiny_checkpoint), "--data", str(ann), "--images", str(images),
                        "--size", "96", "--max-size", "128", "--score-threshold", "0.05", "--no-progress", "--json",
                        str(out)], nproc, slow_rank0=tmp_path / "hook")
        assert done.returncode == 1, done.stderr
        assert sum("1 image(s) could not be read" in line for line in done.stderr.splitlines()) == 1, done.stderr
        metrics[nproc] = json.loads(out.read_text())
    assert metrics[2] == metrics[1]
    done = _fcpose(["eval", "--weights", str(tiny_checkpoint), "--data", str(ann), "--images", str(tmp_path / "nope"),
                    "--no-progress"], 2)  # a set-up error: said once, not once per process
    assert done.returncode != 0
    assert done.stderr.count("fcpose eval: error: image folder not found") == 1, done.stderr


@pytest.mark.slow
def test_a_setup_error_is_said_once(tmp_path):
    """Every process meets the same missing checkpoint: one error line, not one per process; nothing created.
    Slow only for the file's time (about 15 s on 2 cores); its fast form is test_same_outcome_says_an_error_once."""
    _image(tmp_path / "in" / "0.png", (96, 80), seed=0)
    out = tmp_path / "out"
    done = _fcpose(["predict", str(tmp_path / "in"), "--out", str(out), "--weights", str(tmp_path / "missing.pt")], 2)
    errors = [line for line in done.stderr.splitlines() if line.startswith("fcpose predict: error:")]
    assert done.returncode != 0 and len(errors) == 1 and "missing.pt" in errors[0], done.stderr
    assert not out.exists()


def test_remote_sources_are_refused_under_torchrun(tiny_checkpoint, tmp_path, monkeypatch):
    """Webcams and URLs cannot be shared out: one error, before the model loads and before anything is created (under
    torchrun every process raises it and the command line prints it once, see fcpose.distributed.same_outcome)."""
    from fcpose import distributed
    from fcpose.errors import InputError
    from fcpose.inference.predict_command import _prepare

    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    out = tmp_path / "out"
    for spec in ("0", "http://127.0.0.1:9/x.jpg"):
        with pytest.raises(InputError, match="run in one process, not under torchrun"):
            _prepare([spec], str(out), None, "torch", str(tiny_checkpoint), {})
    assert not out.exists()


def test_same_outcome_says_an_error_once(monkeypatch):
    """An error that every rank raises is loud on the lowest rank only; a rank whose step succeeded raises a quiet
    copy; no error: every rank's own result."""
    from fcpose import distributed
    from fcpose.errors import FCPoseError, InputError

    def on(rank, messages):
        monkeypatch.setattr(distributed, "is_distributed", lambda: True)
        monkeypatch.setattr(distributed, "get_rank", lambda: rank)
        monkeypatch.setattr(distributed, "all_gather_object", lambda obj: messages)

    def fail():
        raise InputError("bad")

    on(1, ["bad", "bad"])
    with pytest.raises(InputError) as caught:
        distributed.same_outcome(fail)
    assert caught.value.quiet
    on(0, ["bad", "bad"])
    with pytest.raises(InputError) as caught:
        distributed.same_outcome(fail)
    assert not caught.value.quiet
    on(0, [None, "bad"])
    with pytest.raises(FCPoseError, match="bad") as caught:
        distributed.same_outcome(lambda: 5)
    assert caught.value.quiet
    on(1, [None, None])
    assert distributed.same_outcome(lambda: 5) == 5


def test_gather_shards_undoes_shard(monkeypatch):
    """Rank r's share is items[r::world]; gathering the shares gives the items back in their order, for any length."""
    from fcpose import distributed

    for n in (0, 1, 5, 6, 7):
        items = list(range(n))
        shares = [items[r::3] for r in range(3)]
        monkeypatch.setattr(distributed, "is_distributed", lambda: True)
        monkeypatch.setattr(distributed, "get_world_size", lambda: 3)
        monkeypatch.setattr(distributed, "get_rank", lambda: 1)
        assert distributed.shard(items) == shares[1]
        monkeypatch.setattr(distributed.dist, "gather_object", lambda obj, parts, dst, shares=shares:
                            parts is not None and parts.__setitem__(slice(None), shares))
        assert distributed.gather_shards(shares[1]) is None  # rank 1
        monkeypatch.setattr(distributed, "get_rank", lambda: 0)
        assert distributed.gather_shards(shares[0]) == items


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    """``--device cuda`` with a local rank past the machine's GPUs: a ConfigError that says how many to start,
    not CUDA's "invalid device ordinal"."""
    import torch

    from fcpose import distributed
    from fcpose.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="--nproc_per_node 1"):
        distributed.init_distributed("cuda")
    assert not distributed.is_distributed()
