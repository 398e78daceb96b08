"""``fcpose predict``: images, folders and videos -> COCO-format JSON and rendered skeletons."""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.images import read_image
from ..data.video import VideoReader, VideoWriter
from ..errors import InputError
from ..fileio import atomic_write_text, check_output_dir, prepare_output_dir, unique_output_path
from ..structures import PosePredictor
from .predictor import Predictor
from .sources import Source, collect_sources
from .visualize import draw_poses, save_image

DEFAULT_KEYPOINT_THRESHOLD = {"softmax": 0.05, "logit": 0.0}


def _image_id(path: Path, ids_by_name: dict[str, int]) -> int | None:
    if path.name in ids_by_name:
        return ids_by_name[path.name]
    return int(path.stem) if path.stem.isdigit() else None


def _load_ids(annotations: str | None) -> dict[str, int]:
    if not annotations:
        return {}
    from ..data.coco import read_coco_json

    data = read_coco_json(annotations)  # one-line errors for a missing, unreadable or malformed file
    return {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}


def pose_nms(boxes: torch.Tensor, scores: torch.Tensor, keypoints: torch.Tensor, sigmas,
             threshold: float) -> torch.Tensor:
    """Greedy suppression of duplicate poses: a person whose keypoints have OKS > ``threshold`` with a
    better-scored kept person (object scale: the kept person's box area) is dropped. Returns kept indices,
    best first. Two locations on one person give near-identical keypoints (OKS 0.7-0.9) even when their
    boxes overlap less than the box NMS threshold; two different people side by side have OKS near 0."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() < 2:
        return order
    kps = keypoints[order, :, :2].double()
    box = boxes[order].double()
    area = ((box[:, 2] - box[:, 0]).clamp(min=1) * (box[:, 3] - box[:, 1]).clamp(min=1))
    var = (2 * torch.as_tensor(sigmas, dtype=torch.float64)) ** 2  # COCO: (2 sigma)^2
    d2 = ((kps[:, None] - kps[None]) ** 2).sum(-1)  # [N, N, K]
    oks = torch.exp(-d2 / (2 * area[:, None, None] * var)).mean(-1)  # row i: scale of person i
    keep: list[int] = []
    for j in range(order.numel()):
        if all(float(oks[i, j]) <= threshold for i in keep):
            keep.append(j)
    return order[torch.as_tensor(keep, dtype=torch.long)]


class _Renderer:
    """Which people are drawn (and counted on screen): score >= ``draw_threshold``, then duplicates
    removed by :func:`pose_nms` (keypoint OKS > ``draw_nms`` with a better-scored drawn person), so one
    person is not drawn twice by two locations whose boxes overlap just under the model's box NMS
    threshold (0.6). ``predictions.json`` keeps every detection the model returns (score >= the score
    threshold), as COCO evaluation needs them."""

    def __init__(self, predictor: Predictor, draw_threshold: float, keypoint_threshold: float | None,
                 draw_nms: float = 0.5):
        self.skeleton = predictor.cfg.keypoints.skeleton
        self.sigmas = list(predictor.cfg.keypoints.sigmas)
        self.draw_threshold = draw_threshold
        self.draw_nms = draw_nms
        self.keypoint_threshold = (DEFAULT_KEYPOINT_THRESHOLD[predictor.cfg.model.keypoint.score]
                                   if keypoint_threshold is None else keypoint_threshold)

    def select(self, dets) -> torch.Tensor:
        """Indices of the people drawn, best first."""
        keep = (dets.scores >= self.draw_threshold).nonzero().squeeze(1)
        if keep.numel() > 1 and self.draw_nms < 1.0:
            keep = keep[pose_nms(dets.boxes[keep], dets.scores[keep], dets.keypoints[keep], self.sigmas,
                                 self.draw_nms)]
        return keep

    def __call__(self, image, dets, keep: torch.Tensor | None = None):
        keep = self.select(dets) if keep is None else keep
        return draw_poses(image, dets.boxes[keep], dets.scores[keep], dets.keypoints[keep], self.skeleton,
                          keypoint_threshold=self.keypoint_threshold)


# SHA-256 of the bundled demo scene assets/sample.jpg (a `fcpose synth` image)
_BUNDLED_SYNTHETIC = {"67df4fae76f4f69455726f50bff81bc5c05cbb3eb360d2bac32730f23953fde1"}


def is_synthetic_input(path: Path) -> bool:
    """Whether an input image comes from ``fcpose synth``: it lies in the ``images/`` folder of a dataset
    whose ``annotations.json`` carries the synthetic description, or it is the bundled demo scene."""
    from ..data.synthetic import SYNTH_DESCRIPTION
    from ..weights.zoo import sha256_of

    ann = path.parent.parent / "annotations.json"
    if path.parent.name == "images" and ann.is_file():
        try:
            info = json.loads(ann.read_text()).get("info", {})
            if isinstance(info, dict) and info.get("description") == SYNTH_DESCRIPTION:
                return True
        except (OSError, ValueError, AttributeError):
            pass
    try:
        return path.stat().st_size < (1 << 22) and sha256_of(path) in _BUNDLED_SYNTHETIC
    except OSError:
        return False


class _DomainCheck:
    """Warns once per run when a model trained on synthetic scenes only (checkpoint metadata
    ``trained_on: "synthetic"``) meets an input that is not a synthetic scene (see
    :func:`is_synthetic_input`; a video always counts as real)."""

    def __init__(self, predictor: PosePredictor, say):
        self.active = getattr(predictor, "trained_on", None) == "synthetic"
        self.say = say
        self.warned = False

    def __call__(self, src: Source) -> None:
        if not self.active or self.warned or (src.kind == "image" and is_synthetic_input(src.path)):
            return
        self.warned = True
        self.say(f"warning: this model was trained on synthetic scenes only (fcpose synth) and is not meant "
                 f"for real photos or videos such as {src.path.name}; for those use --weights fcpose_r50_official")


def _people(n: int) -> str:
    return f"{n} {'person' if n == 1 else 'people'}"


def run_predict(inputs: list[str], weights: str, out: str, *, score_threshold: float | None = None,
                device: str = "cpu", size: int | None = None, max_size: int | None = None,
                annotations: str | None = None, render: bool = True, draw_threshold: float = 0.3,
                keypoint_threshold: float | None = None, batch_size: int = 4, progress: bool = True,
                backend: str = "torch", precision: str = "fp32", compile: bool = False, optimize: bool = True,
                draw_nms: float = 0.5, preprocess: str = "auto", log=None) -> int:
    """Predict on every input; returns the exit status (0 = all inputs done, 1 = some failed).

    Raises :class:`~fcpose.errors.InputError` (exit 2 on the command line, no output file) when no input
    could be used at all. ``backend="onnxruntime"`` / ``"openvino"`` runs an ``fcpose export`` .onnx / .xml
    file given as ``weights``. One line per input says how many people were found (score >=
    ``draw_threshold``, the ones drawn) and how long it took; ``log`` (default: stderr) receives these lines.
    """
    def say(msg: str) -> None:
        if log is not None:
            log(msg)
        else:
            tqdm.write(msg, file=sys.stderr)

    from .sources import expand_globs, is_url, is_webcam

    remote = [str(s) for s in inputs if is_url(str(s)) or is_webcam(str(s))]  # image/stream URLs, webcams
    inputs, glob_problems = expand_globs([s for s in inputs if str(s) not in remote])
    sources, problems = collect_sources(inputs) if inputs else ([], [])
    problems = glob_problems + problems
    if not sources and not remote:
        raise InputError("; ".join(problems) if problems else "no input images or videos were given")
    check_output_dir(out)  # before the model loads: a bad --out fails at once (created once the model works)
    ids_by_name = _load_ids(annotations)
    from .backends import load_predictor

    predictor = load_predictor(backend, weights, device=device, min_size=size, max_size=max_size,
                               score_threshold=score_threshold, batch_size=batch_size,
                               **({"optimize": optimize, "precision": precision, "compile": compile,
                                   "preprocess": preprocess} if backend == "torch" else {}))
    out_dir = prepare_output_dir(out)
    domain = _DomainCheck(predictor, say)
    renderer = _Renderer(predictor, draw_threshold, keypoint_threshold, draw_nms)
    results: list[dict] = []
    used: set[str] = set()
    failures = list(problems)
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind == "video"]
    done, people, seconds, frames, video_frames = 0, 0, 0.0, 0, 0
    # "skipped" lines wait for the first input that works: if none does, the run ends with one error line
    held = [f"skipped: {problem}" for problem in problems]

    def skipped(exc: Exception) -> None:
        failures.append(str(exc))
        if done:
            say(f"skipped: {exc}")
        else:
            held.append(f"skipped: {exc}")

    def succeeded() -> None:
        while held:
            say(held.pop(0))

    bar = tqdm(images, desc="images", unit="img", disable=not progress or len(images) < 2, file=sys.stderr)
    for src in bar:
        try:
            image = read_image(src.path)
        except InputError as exc:
            skipped(exc)
            continue
        domain(src)
        start = time.perf_counter()
        dets = predictor(image)
        elapsed = time.perf_counter() - start
        keep = renderer.select(dets)
        results.extend(dets.to_coco(image_id=_image_id(src.path, ids_by_name), file_name=src.path.name))
        if render:
            save_image(unique_output_path(out_dir, src.path, ".jpg", used), renderer(image, dets, keep))
        succeeded()
        done, people, seconds, frames = done + 1, people + len(keep), seconds + elapsed, frames + 1
        say(f"{src.path.name}: {_people(len(keep))} (score >= {draw_threshold:g}), {elapsed * 1000:.0f} ms")

    for src in videos:
        try:
            entries, n_frames, n_people, elapsed = _predict_video(predictor, src, out_dir, renderer, render,
                                                                  progress, used, say, lambda src=src: domain(src))
        except InputError as exc:
            skipped(exc)
            continue
        succeeded()
        results.extend(entries)
        done, seconds, frames, video_frames = done + 1, seconds + elapsed, frames + n_frames, video_frames + n_frames

    interrupted = False
    if remote:
        from .remote import predict_remote

        more, remote_failures, interrupted = predict_remote(predictor, remote, out_dir, renderer, render, progress,
                                                            used, sole=not sources and len(remote) == 1)
        results.extend(more)
        failures.extend(remote_failures)
        done += len(remote) - len(remote_failures)
        if done:
            succeeded()
    if interrupted:
        path = atomic_write_text(out_dir / "predictions.json", json.dumps(results), what="predictions")
        say(f"interrupted: {len(results)} detections so far -> {path}")
        return 130
    if not done:
        raise InputError(failures[0] if len(failures) == 1 else
                         f"none of the {len(failures)} inputs could be used: " + "; ".join(failures))
    path = atomic_write_text(out_dir / "predictions.json", json.dumps(results), what="predictions")
    parts = []
    if frames > video_frames:
        n = frames - video_frames
        parts.append(f"{n} image{'s' if n != 1 else ''}: {_people(people)} (score >= {draw_threshold:g})")
    if video_frames:
        parts.append(f"{video_frames} video frame{'s' if video_frames != 1 else ''}")
    if remote:
        parts.append(f"{len(remote) - len(remote_failures)} live or remote source(s)")
    what = "image" if not video_frames else "frame" if frames == video_frames else "image or frame"
    rate = f", {seconds / frames * 1000:.0f} ms per {what} ({frames / seconds:.1f}/s)" if seconds > 0 and frames else ""
    say(f"{'; '.join(parts)}{rate} -> {path} (all {len(results)} detections with score >= "
        f"{predictor.params.score_threshold:g})")
    if failures:
        say(f"{len(failures)} of {len(failures) + done} input(s) failed (listed above)")
        return 1
    return 0


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _predict_video(predictor: Predictor, src: Source, out_dir: Path, renderer: _Renderer, render: bool,
                   progress: bool, used: set[str], say, opened=lambda: None) -> tuple[list[dict], int, int, float]:
    """Every frame of a video; entries carry the video's file name and the 0-based ``frame`` index.
    ``opened()`` is called once the video could be opened.

    Returns (entries, frames, people drawn over all frames, seconds of inference)."""
    results: list[dict] = []
    frame_index, people, seconds = 0, 0, 0.0
    with VideoReader(src.path) as reader, ExitStack() as stack:
        opened()
        writer = None
        if render:
            writer = stack.enter_context(VideoWriter(unique_output_path(out_dir, src.path, ".mp4", used), reader.fps,
                                                     reader.width, reader.height))
        bar = stack.enter_context(tqdm(total=reader.frame_count or None, desc=src.path.name, unit="frame",
                                       disable=not progress, file=sys.stderr))
        for batch in _batched(reader, predictor.batch_size):
            start = time.perf_counter()
            outputs = predictor.predict(batch)
            seconds += time.perf_counter() - start
            for frame, dets in zip(batch, outputs):
                for entry in dets.to_coco(file_name=src.path.name):
                    entry["frame"] = frame_index
                    results.append(entry)
                keep = renderer.select(dets)
                people += len(keep)
                if writer is not None:
                    writer.write(renderer(frame, dets, keep))
                frame_index += 1
            bar.update(len(batch))
    per_frame = people / frame_index if frame_index else 0.0
    rate = f"{frame_index / seconds:.1f} frames/s" if seconds > 0 else ""
    written = f" -> {writer.path.name} ({writer.codec_note})" if writer is not None else ""
    say(f"{src.path.name}: {frame_index} frames, {per_frame:.1f} people per frame (score >= "
        f"{renderer.draw_threshold:g}), {rate}{written}")
    return results, frame_index, people, seconds
