"""``fcpose predict``: images, folders and videos -> COCO-format JSON and rendered skeletons."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..fileio import atomic_write_text
from .predictor import Predictor
from .sources import Source, VideoReader, VideoWriter, collect_sources, read_image
from .visualize import draw_poses, save_image

DEFAULT_KEYPOINT_THRESHOLD = {"softmax": 0.05, "logit": 0.0}


def _image_id(path: Path, ids_by_name: dict[str, int]) -> int | None:
    if path.name in ids_by_name:
        return ids_by_name[path.name]
    return int(path.stem) if path.stem.isdigit() else None


def _load_ids(annotations: str | None) -> dict[str, int]:
    if not annotations:
        return {}
    try:
        data = json.loads(Path(annotations).read_text())
        return {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read image ids from {annotations}: {exc}") from None


class _Renderer:
    def __init__(self, predictor: Predictor, draw_threshold: float, keypoint_threshold: float | None):
        self.skeleton = predictor.cfg.keypoints.skeleton
        self.draw_threshold = draw_threshold
        self.keypoint_threshold = (DEFAULT_KEYPOINT_THRESHOLD[predictor.cfg.model.keypoint.score]
                                   if keypoint_threshold is None else keypoint_threshold)

    def __call__(self, image, dets):
        keep = dets.scores >= self.draw_threshold
        return draw_poses(image, dets.boxes[keep], dets.scores[keep], dets.keypoints[keep], self.skeleton,
                          keypoint_threshold=self.keypoint_threshold)


def _unique_output(out_dir: Path, source: Path, suffix: str, used: set[str]) -> Path:
    name = source.stem + suffix
    stem, i = source.stem, 1
    while name in used:
        name = f"{stem}_{i}{suffix}"
        i += 1
    used.add(name)
    return out_dir / name


def run_predict(inputs: list[str], weights: str, out: str, *, score_threshold: float | None = None,
                device: str = "cpu", size: int | None = None, max_size: int | None = None,
                annotations: str | None = None, render: bool = True, draw_threshold: float = 0.3,
                keypoint_threshold: float | None = None, batch_size: int = 4, progress: bool = True,
                backend: str = "torch", precision: str = "fp32", compile: bool = False, optimize: bool = True) -> int:
    """Predict on every input; returns the exit status (0 = all inputs done, 1 = some failed).

    ``backend="onnxruntime"`` runs an ``fcpose export`` ONNX file given as ``weights``.
    """
    from .sources import expand_globs, is_url, is_webcam

    remote = [str(s) for s in inputs if is_url(str(s)) or is_webcam(str(s))]  # image/stream URLs, webcams
    inputs, glob_problems = expand_globs([s for s in inputs if str(s) not in remote])
    sources, problems = collect_sources(inputs) if inputs else ([], [])
    problems = glob_problems + problems
    if not sources and not remote:
        raise InputError("; ".join(problems) if problems else "no input images or videos were given")
    ids_by_name = _load_ids(annotations)
    if backend == "onnxruntime":
        from ..export.onnx_predictor import OnnxPredictor

        predictor = OnnxPredictor(weights, device=device, min_size=size, max_size=max_size,
                                  score_threshold=score_threshold, batch_size=batch_size)
    else:
        predictor = Predictor.from_checkpoint(weights, device=device, min_size=size, max_size=max_size,
                                              score_threshold=score_threshold, batch_size=batch_size,
                                              optimize=optimize, precision=precision, compile=compile)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    renderer = _Renderer(predictor, draw_threshold, keypoint_threshold)
    results: list[dict] = []
    used: set[str] = set()
    failures = list(problems)
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind == "video"]

    bar = tqdm(images, desc="images", unit="img", disable=not progress or len(images) < 2, file=sys.stderr)
    for src in bar:
        try:
            image = read_image(src.path)
        except InputError as exc:
            failures.append(str(exc))
            tqdm.write(f"warning: {exc}", file=sys.stderr)
            continue
        dets = predictor(image)
        results.extend(dets.to_coco(image_id=_image_id(src.path, ids_by_name), file_name=src.path.name))
        if render:
            save_image(_unique_output(out_dir, src.path, ".jpg", used), renderer(image, dets))

    for src in videos:
        try:
            results.extend(_predict_video(predictor, src, out_dir, renderer, render, progress, used))
        except InputError as exc:
            failures.append(str(exc))
            print(f"warning: {exc}", file=sys.stderr)

    interrupted = False
    if remote:
        from .remote import predict_remote

        more, remote_failures, interrupted = predict_remote(predictor, remote, out_dir, renderer, render, progress,
                                                            used, sole=not sources and len(remote) == 1)
        results.extend(more)
        failures.extend(remote_failures)
    atomic_write_text(out_dir / "predictions.json", json.dumps(results))
    if interrupted:
        print(f"interrupted: {len(results)} people so far -> {out_dir / 'predictions.json'}", file=sys.stderr)
        return 130
    done = len(sources) + len(remote) - (len(failures) - len(problems))
    print(f"{len(results)} people in {done} input(s) -> {out_dir / 'predictions.json'}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} input(s) failed: " + "; ".join(failures), file=sys.stderr)
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
                   progress: bool, used: set[str]) -> list[dict]:
    """Every frame of a video; entries carry the video's file name and the 0-based ``frame`` index."""
    results: list[dict] = []
    frame_index = 0
    with VideoReader(src.path) as reader, ExitStack() as stack:
        writer = None
        if render:
            writer = stack.enter_context(VideoWriter(_unique_output(out_dir, src.path, ".mp4", used), reader.fps,
                                                     reader.width, reader.height))
        bar = stack.enter_context(tqdm(total=reader.frame_count or None, desc=src.path.name, unit="frame",
                                       disable=not progress, file=sys.stderr))
        for batch in _batched(reader, predictor.batch_size):
            for frame, dets in zip(batch, predictor.predict(batch)):
                for entry in dets.to_coco(file_name=src.path.name):
                    entry["frame"] = frame_index
                    results.append(entry)
                if writer is not None:
                    writer.write(renderer(frame, dets))
                frame_index += 1
            bar.update(len(batch))
    return results
