"""SIGINT/SIGTERM during ``fcpose train``: the step finishes, a complete last.pt is written, the exit code is
128 + the signal, no temporary file is left, and --resume continues with the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcpose.weights.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
FAST = ["input.min_size_train=[96, 96]", "input.max_size_train=160", "solver.warmup_iters=2", "solver.steps=[]",
        "solver.log_period=1",
        "solver.checkpoint_period=0", "solver.ims_per_batch=1"]


def _command(coco_tiny: Path, out: Path, max_iter: int, *extra: str) -> list[str]:
    sets = [a for o in FAST for a in ("--set", o)]
    return [sys.executable, "-m", "fcpose", "train", "--config", "overfit_tiny", "--data",
            str(coco_tiny / "person_keypoints.json"), "--images", str(coco_tiny), "--output", str(out),
            "--max-iter", str(max_iter), "--num-workers", "0", "--no-progress", *sets, *extra]


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["total_loss"] for r in rows if "total_loss" in r}


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


TOTAL = 6


@pytest.fixture(scope="module")
def straight(coco_tiny, tmp_path_factory) -> Path:
    """An uninterrupted run of TOTAL iterations: what a stopped and resumed run must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_command(coco_tiny, out, TOTAL), env=_env(), check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_last_and_resume_continues(coco_tiny, straight, tmp_path, sig, code):
    total = TOTAL
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(coco_tiny, out, 1000), env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until two iterations are logged
        if (out / "metrics.jsonl").exists() and len(_losses(out)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.startswith("fcpose train:")]
    assert len(lines) == 1 and f"stopped by {sig.name}" in lines[0] and "--resume" in lines[0], err
    assert lines[0] == err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (out / "model_final.pt").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())
    saved = read_checkpoint(out / "last.pt")
    step = saved["step"]
    assert 2 <= step < total and "optimizer" in saved and "scheduler" in saved
    # Resume to the same end (no lr steps: the schedule does not depend on max_iter): the iterations after the
    # saved one have the uninterrupted run's losses.
    subprocess.run(_command(coco_tiny, out, total, "--resume"), env=_env(), check=True, capture_output=True,
                   timeout=600)
    a, b = _losses(straight), _losses(out)
    for it in range(step + 1, total + 1):
        assert b[it] == pytest.approx(a[it], rel=1e-5, abs=1e-6), it
    assert read_checkpoint(out / "model_final.pt")["step"] == total


def test_sigterm_under_torchrun_stops_every_rank_at_one_iteration(coco_tiny, tmp_path):
    """Two gloo processes under torchrun: SIGTERM to torchrun (forwarded to both workers) ends both at the same
    iteration, rank 0 writes a complete last.pt, nothing temporary is left, and --resume continues from it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port), "-m", "fcpose"]
    cmd = _command(coco_tiny, out, 1000, "--batch-size", "2")
    proc = subprocess.Popen(launch + cmd[3:], env=_env(), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").exists() and len(_losses(out)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM at iteration" in line]
    assert len(stopped) == 1, err  # said once, by rank 0 (the other rank stops alike, quietly)
    logged = [line for line in err.splitlines() if line.startswith("iter 2/")]
    assert len(logged) == 1, err  # --no-progress log lines come from rank 0 only
    assert not [p for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())
    step = read_checkpoint(out / "last.pt")["step"]
    # both ranks stopped at that iteration (a rank stopping elsewhere would hang the other's collectives)
    assert f"at iteration {step}:" in stopped[0], err
    assert step >= 2 and not (out / "model_final.pt").exists()
    resumed = subprocess.run(launch + _command(coco_tiny, out, step + 2, "--batch-size", "2", "--resume")[3:],
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'last.pt'} at iteration {step}" in resumed.stderr
    assert read_checkpoint(out / "model_final.pt")["step"] == step + 2


def test_no_progress_prints_a_line_every_log_period(coco_tiny, tmp_path, capsys):
    from fcpose.cli import main

    sets = [a for o in FAST if "log_period" not in o for a in ("--set", o)]
    code = main(["train", "--config", "overfit_tiny", "--data", str(coco_tiny / "person_keypoints.json"), "--images",
                 str(coco_tiny), "--output", str(tmp_path / "run"), "--max-iter", "4", "--num-workers", "0",
                 "--no-progress", *sets, "--set", "solver.log_period=2"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("iter ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "4/4"]  # the first, then every 2nd iteration
    for line in lines:
        assert "loss " in line and "heatmap " in line and " lr " in line and " s/it" in line and "eta " in line
