"""``fcpose track``, live/remote sources (a loopback HTTP server started here), the threaded pipeline and
Ctrl-C."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcpose.assets import DEMO_MODEL, asset
from fcpose.cli import main
from fcpose.data.synthetic import clip_for, write_clips
from fcpose.data.video import VideoWriter
from fcpose.inference.pipeline import OrderedSink, Prefetcher
from fcpose.inference.sources import expand_globs
from fcpose.tracking import load_posetrack

ROOT = Path(__file__).resolve().parents[1]
DEMO = asset(DEMO_MODEL)
SIZE = ["--size", "160", "--max-size", "224"]


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips")
    write_clips(out, 1, seed=5, num_frames=6, height=160, width=224, min_people=2, max_people=3, progress=False)
    return out


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (loopback only) from a thread; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
def test_track_writes_posetrack_mot_and_a_video(clip_dir, tmp_path):
    out = tmp_path / "out"
    video = clip_dir / "videos" / "clip_000.mp4"
    code = main(["track", str(video), "--weights", str(DEMO), "--out", str(out), "--mot", "--smooth",
                 "--no-progress", *SIZE])
    assert code == 0
    videos = load_posetrack(out / "tracks.json")
    frames = videos["clip_000"]
    assert [f.frame_index for f in frames] == list(range(6))
    ids = np.concatenate([f.track_ids for f in frames])
    assert len(ids) > 0 and ids.min() >= 1
    assert count_frames(out / "clip_000.mp4") == 6
    assert not list(out.glob(".*partial*"))  # the temporary video was renamed
    lines = (out / "mot" / "clip_000.txt").read_text().splitlines()
    assert len(lines) == len(ids) and all(len(line.split(",")) == 10 for line in lines)


def test_predictor_track_iterator(clip_dir):
    import fcpose

    predictor = fcpose.Predictor.from_checkpoint(DEMO, min_size=160, max_size=224)
    people = list(predictor.track(str(clip_dir / "videos" / "clip_000.mp4")))
    assert len(people) == 6 and [p.frame_index for p in people] == list(range(6))


def test_glob_of_images_is_one_sequence(clip_dir, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    cap = cv2.VideoCapture(str(clip_dir / "videos" / "clip_000.mp4"))
    for i in range(4):
        ok, f = cap.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), f)
    cap.release()
    out = tmp_path / "out"
    assert main(["track", str(frames / "*.jpg"), "--weights", str(DEMO), "--out", str(out), "--no-render",
                 "--no-progress", *SIZE]) == 0
    videos = load_posetrack(out / "tracks.json")
    assert list(videos) == ["frames"] and len(videos["frames"]) == 4
    assert expand_globs([str(frames / "*.png")])[1] == [f"no files match {frames / '*.png'}"]


def test_http_served_image_and_video(clip_dir, http_root, tmp_path):
    www, base = http_root
    (www / "clip.mp4").write_bytes((clip_dir / "videos" / "clip_000.mp4").read_bytes())
    cap = cv2.VideoCapture(str(www / "clip.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(www / "frame.jpg"), frame)

    out = tmp_path / "pred"
    assert main(["predict", f"{base}/frame.jpg", f"{base}/clip.mp4", "--weights", str(DEMO), "--out", str(out),
                 "--no-progress", *SIZE]) == 0
    results = json.loads((out / "predictions.json").read_text())
    names = {r["file_name"] for r in results}
    assert names <= {"frame.jpg", "clip"} and "clip" in names
    assert (out / "frame.jpg").is_file() and count_frames(out / "clip.mp4") == 6

    out = tmp_path / "track"
    assert main(["track", f"{base}/clip.mp4", "--weights", str(DEMO), "--out", str(out), "--no-progress",
                 *SIZE]) == 0
    assert len(load_posetrack(out / "tracks.json")["clip"]) == 6


@pytest.mark.parametrize("command", ["track", "predict"])
def test_unreachable_or_missing_urls_are_one_line(command, http_root, tmp_path, capsys):
    _, base = http_root
    for url, reason in ((f"http://127.0.0.1:{closed_port()}/x.mp4", "refused"), (f"{base}/missing.jpg", "404")):
        code = main([command, url, "--weights", str(DEMO), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and reason in err[0] and url in err[0], err
    assert not (tmp_path / "o" / "tracks.json").exists()


def test_sigint_during_a_video_leaves_valid_outputs(clip_dir, tmp_path):
    # A long video: the clip's frames over and over.
    frames = []
    cap = cv2.VideoCapture(str(clip_dir / "videos" / "clip_000.mp4"))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    long_video = tmp_path / "long.mp4"
    with VideoWriter(long_video, 25, frames[0].shape[1], frames[0].shape[0]) as w:
        for _ in range(100):
            for f in frames:
                w.write(f)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "fcpose", "track", str(long_video), "--weights", str(DEMO),
                             "--out", str(out), "--no-progress", *SIZE], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    partial = out / ".long.part.mp4"  # VideoWriter's temporary file (H.264 through PyAV, a dev dependency)
    deadline = time.monotonic() + 240
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the video is opened at the first rendered frame
    assert partial.exists(), proc.stderr.read() if proc.poll() is not None else "no frame after 240 s"
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    frames_done = load_posetrack(out / "tracks.json")["long"]
    assert 1 <= len(frames_done) < 600
    assert count_frames(out / "long.mp4") == len(frames_done)  # every frame in the JSON is in the video
    assert not partial.exists()


# ----------------------------------------------------------------------------------------------
def test_prefetcher_keeps_order_and_drops_only_when_asked():
    assert [x for _, x in Prefetcher(range(100), maxsize=3)] == list(range(100))

    def slow_consumer(pre):
        got = []
        for _, x in pre:
            got.append(x)
            time.sleep(0.01)
        return got

    # drop=True: the decoder never waits, so a slow consumer sees increasing but not all frames.
    pre = Prefetcher(iter(range(50)), maxsize=2, drop=True)
    got = slow_consumer(pre)
    assert got == sorted(got) and got[-1] == 49 and len(got) + pre.dropped == 50 and pre.dropped > 0


def test_pipeline_errors_reach_the_caller():
    def broken():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(Prefetcher(broken()))
    seen = []

    def fn(x):
        if x == 3:
            raise RuntimeError("encoder broke")
        seen.append(x)

    sink = OrderedSink(fn, maxsize=2)
    with pytest.raises(RuntimeError, match="encoder broke"):
        for i in range(10):
            sink.put(i)
        sink.close()
    assert seen == [0, 1, 2]


def test_synthetic_clips_have_crossings_and_ids():
    clip = clip_for(0, 1, num_frames=60, min_people=4, max_people=4)
    xs = np.array([[clip._state(p, t)[0] for p in clip.people] for t in range(60)])  # [T, P]
    order_changes = (np.diff(np.argsort(xs, axis=1), axis=0) != 0).any(axis=1).sum()
    assert order_changes > 0  # people pass each other
    gt = clip.ground_truth(0)
    assert sorted(gt.track_ids.tolist()) == [1, 2, 3, 4]


def test_synth_video_writes_clips_with_ground_truth_track_ids(tmp_path):
    assert main(["synth", "--video", "--out", str(tmp_path), "--num", "2", "--frames", "4", "--height", "96",
                 "--width", "128", "--min-people", "2", "--max-people", "2"]) == 0
    videos = load_posetrack(tmp_path / "annotations.json")
    assert sorted(videos) == ["clip_000", "clip_001"]
    for name, frames in videos.items():
        assert len(frames) == 4 and count_frames(tmp_path / "videos" / f"{name}.mp4") == 4
        ids = {int(i) for f in frames for i in f.track_ids}
        assert ids <= {1, 2} and ids
        flags = np.concatenate([f.keypoints[..., 2].reshape(-1) for f in frames])
        assert set(np.unique(flags)) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("args,needle", [
    (["missing.mp4"], "video not found"),
    (["notes.txt"], "unsupported file type"),
    (["frames/*.png"], "no files match"),
    (["CLIP", "--set", "tracker.nope=1"], "unknown config key 'tracker.nope'"),
    (["CLIP", "--set", "model.backbone.name=x"], "only takes tracker.* keys"),
    (["CLIP", "--set", "tracker.low_threshold=0.9"], "low_threshold <= high_threshold"),
])
def test_track_user_errors_are_one_line(args, needle, clip_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    args = [str(clip_dir / "videos" / "clip_000.mp4") if a == "CLIP" else a for a in args]
    code = main(["track", *args, "--weights", str(DEMO), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def _unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot write into. As root every folder is writable, except those of
    /proc (its per-process folders refuse new entries even to root, and say so to os.access)."""
    if os.geteuid() == 0:
        return Path(f"/proc/{os.getpid()}")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("case", ["file", "under_a_file", "uncreatable", "read_only"])
def test_track_checks_its_output_folder_first(case, clip_dir, tmp_path, capsys):
    """A bad --out is one line and exit status 2 before the model loads, as in predict; nothing is written."""
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = {"file": blocker, "under_a_file": blocker / "out", "uncreatable": Path("/proc/fcpose-test/out"),
           "read_only": _unwritable_folder(tmp_path)}[case]
    code = main(["track", str(clip_dir / "videos" / "clip_000.mp4"), "--weights", str(tmp_path / "never_read.pt"),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fcpose track: error: ") and str(out) in err[0], err
    assert "checkpoint" not in err[0]  # the output was checked first: the (missing) weights were never read
    assert blocker.read_text() == "keep me"
    if case == "read_only" and out.is_relative_to(tmp_path):
        assert list(out.iterdir()) == []


@pytest.mark.parametrize("bad", ["corrupt_image", "folder_of_corrupt_frames", "corrupt_video"])
def test_track_unreadable_sole_input_writes_nothing(bad, clip_dir, tmp_path, capsys):
    """The only source cannot be read: one line, exit 2, no tracks.json and no output folder left behind."""
    good = (clip_dir / "videos" / "clip_000.mp4").read_bytes()
    source = {"corrupt_image": tmp_path / "x.jpg", "folder_of_corrupt_frames": tmp_path / "frames" / "0001.jpg",
              "corrupt_video": tmp_path / "v.mp4"}[bad]
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(good[:300] if bad != "corrupt_video" else good[:3000])
    given = source.parent if bad == "folder_of_corrupt_frames" else source
    out = tmp_path / "runs" / "t"
    code = main(["track", str(given), "--weights", str(DEMO), "--out", str(out), "--no-progress", *SIZE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fcpose track: error: "), err
    assert not (tmp_path / "runs").exists()  # created for this run, removed again: no empty folder


def test_track_summary_counts_tracks_and_person_frames(clip_dir, tmp_path, capsys):
    """The summary names tracks and person-frames; a bad source among good ones is a warning and status 1."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    clip = str(clip_dir / "videos" / "clip_000.mp4")
    code = main(["track", str(bad), clip, clip, "--weights", str(DEMO), "--out", str(out), "--no-progress",
                 "--no-render", *SIZE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert err[0].startswith("warning: cannot read image") and "bad.jpg" in err[0], err
    videos = load_posetrack(out / "tracks.json")
    tracks = sum(len({int(i) for f in frames for i in f.track_ids}) for frames in videos.values())
    person_frames = sum(len(f.track_ids) for frames in videos.values() for f in frames)
    assert tracks > 0 and person_frames > tracks
    assert f"{tracks} tracks, {person_frames} person-frames in 12 frames -> {out / 'tracks.json'}" in err, err
    assert err[-1].startswith("1 source(s) failed: cannot read image")


def test_bench_video_reports_both_fps(demo_video, tmp_path):
    out = tmp_path / "v.json"
    assert main(["bench", "--video", str(demo_video), "--config", "fcpose_r18_tiny", "--size", "64", "--max-size",
                 "128", "--video-frames", "3", "--video-rounds", "1", "--warmup", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["fps"]) == {"network_only", "end_to_end", "serial"} and report["frames"] == 3
    assert report["end_to_end_over_network"] == pytest.approx(
        report["fps"]["end_to_end"] / report["fps"]["network_only"], abs=2e-3)
