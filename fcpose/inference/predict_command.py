"""``fcpose predict``: images, folders and videos -> COCO-format JSON and rendered skeletons."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tqdm import tqdm

from .. import distributed as dist
from ..data.images import read_image
from ..data.video import VideoReader, VideoWriter
from ..errors import FCPoseError, InputError, first_line
from ..fileio import atomic_write_text, check_output_dir, output_dir, unique_output_path
from ..structures import PEOPLE_OKS_THRESHOLD, PEOPLE_SCORE_THRESHOLD, PoseDetections, PosePredictor
from .predictor import Predictor
from .sources import Source, collect_sources, image_id
from .visualize import draw_poses, keypoint_draw_threshold, save_image


def _load_ids(annotations: str | None) -> dict[str, int]:
    if not annotations:
        return {}
    from ..data.coco import read_coco_json

    data = read_coco_json(annotations)  # one-line errors for a missing, unreadable or malformed file
    return {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}


class PeopleRenderer:
    """Which people are drawn (and counted on screen): :meth:`PoseDetections.people` with ``draw_threshold`` and
    ``draw_nms`` and the model's OKS sigmas — score >= ``draw_threshold``, then duplicates removed (keypoint OKS >
    ``draw_nms`` with a better-scored drawn person), so one person is not drawn twice by two locations whose boxes
    overlap just under the model's box NMS threshold (0.6). ``predictions.json`` keeps every detection the model returns
    (score >= the score threshold), as COCO evaluation needs them."""

    def __init__(self, predictor: PosePredictor, draw_threshold: float, keypoint_threshold: float | None,
                 draw_nms: float = PEOPLE_OKS_THRESHOLD):
        self.skeleton = predictor.cfg.keypoints.skeleton
        self.sigmas = list(predictor.cfg.keypoints.sigmas)
        self.draw_threshold = draw_threshold
        self.draw_nms = draw_nms
        self.keypoint_threshold = keypoint_draw_threshold(predictor.cfg, keypoint_threshold)

    def select(self, dets: PoseDetections) -> PoseDetections:
        """The people drawn, best first."""
        return dets.people(self.draw_threshold, self.draw_nms, self.sigmas)

    def select_indices(self, dets: PoseDetections):
        """The indices into ``dets`` of the people drawn, best first (what :meth:`select` picks)."""
        return dets.people_indices(self.draw_threshold, self.draw_nms, self.sigmas)

    def __call__(self, image, dets: PoseDetections, shown: PoseDetections | None = None):
        shown = self.select(dets) if shown is None else shown
        return draw_poses(image, shown.boxes, shown.scores, shown.keypoints, self.skeleton,
                          keypoint_threshold=self.keypoint_threshold)


# SHA-256 of the bundled demo scene fcpose/assets/sample.jpg (a `fcpose synth` image)
_BUNDLED_SYNTHETIC = {"67df4fae76f4f69455726f50bff81bc5c05cbb3eb360d2bac32730f23953fde1"}


def is_synthetic_input(path: Path) -> bool:
    """Whether an input image comes from ``fcpose synth``: it lies in the ``images/`` folder of a dataset
    whose ``annotations.json`` carries the synthetic description, or it is the bundled demo scene."""
    from ..config import is_synthetic_dataset
    from ..weights.zoo import sha256_of

    if path.parent.name == "images" and is_synthetic_dataset(path.parent.parent / "annotations.json"):
        return True
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
                annotations: str | None = None, render: bool = True, draw_threshold: float = PEOPLE_SCORE_THRESHOLD,
                keypoint_threshold: float | None = None, batch_size: int = 4, progress: bool = True,
                backend: str = "torch", precision: str = "fp32", compile: bool = False, optimize: bool = True,
                draw_nms: float = PEOPLE_OKS_THRESHOLD, warmup: bool = False, preprocess: str = "auto",
                log=None) -> int:
    """Predict on every input; returns the exit status (0 = all inputs done, 1 = some failed).

    Raises :class:`~fcpose.errors.InputError` (exit 2 on the command line, no output file) when no input
    could be used at all. ``backend="onnxruntime"`` / ``"openvino"`` runs an ``fcpose export`` .onnx / .xml
    file given as ``weights``. One line per input says how many people were found (score >=
    ``draw_threshold``, the ones drawn) and how long it took; ``log`` (default: stderr) receives these lines.
    ``warmup``: run the first image once, untimed, before it is timed (the first call of a model allocates
    memory and picks kernels), and say how long that took in a line of its own.

    Under ``torchrun`` (README, "Running on many machines") each process takes its share of the files
    (:func:`fcpose.distributed.shard` of the image batches and whole videos) on its own device (``cuda:LOCAL_RANK``)
    and writes their renders; rank 0 writes predictions.json, the same as one process's, once every process has
    succeeded. Live and remote sources run in one process only."""
    distributed = dist.init_distributed(device)
    prefix = f"[rank {dist.get_rank()}] " if distributed else ""

    def say(msg: str, own: bool = True) -> None:
        msg = prefix + msg if own else msg
        if log is not None:
            log(msg)
        else:
            tqdm.write(msg, file=sys.stderr)

    options = dict(device=dist.local_device(device) if distributed else device, min_size=size, max_size=max_size,
                   score_threshold=score_threshold, batch_size=batch_size)
    if backend == "torch":
        options.update(optimize=optimize, precision=precision, compile=compile, preprocess=preprocess)
    try:
        sources, remote, problems, ids_by_name, predictor = dist.same_outcome(
            lambda: _prepare(inputs, out, annotations, backend, weights, options))
        # created now that the model works; removed again (if still empty) when the run fails or is interrupted
        with output_dir(out) as out_dir, _stop_on_sigterm(distributed):
            return _predict_into(out_dir, sources, remote, problems, predictor, ids_by_name, say, render=render,
                                 draw_threshold=draw_threshold, keypoint_threshold=keypoint_threshold,
                                 draw_nms=draw_nms, progress=progress, warmup=warmup)
    finally:
        dist.cleanup()


def _prepare(inputs: list[str], out: str, annotations: str | None, backend: str, weights: str, options: dict):
    """The inputs (sources, remote, problems), the image ids and the model, each checked before the slow work."""
    from .backends import load_predictor
    from .sources import expand_globs, is_url, is_webcam

    remote = [str(s) for s in inputs if is_url(str(s)) or is_webcam(str(s))]  # image/stream URLs, webcams
    inputs, glob_problems = expand_globs([s for s in inputs if str(s) not in remote])
    sources, problems = collect_sources(inputs) if inputs else ([], [])
    problems = glob_problems + problems
    if not sources and not remote:
        raise InputError("; ".join(problems) if problems else "no input images or videos were given")
    if remote and dist.get_world_size() > 1:
        raise InputError(f"live and remote sources ({remote[0]}) run in one process, not under torchrun: give them "
                         "to a plain `fcpose predict`")
    check_output_dir(out)  # before the model loads: a bad --out fails at once (created once the model works)
    ids_by_name = _load_ids(annotations)
    return sources, remote, problems, ids_by_name, load_predictor(backend, weights, **options)


@contextmanager
def _stop_on_sigterm(active: bool):
    """Under torchrun: SIGTERM (what the launcher sends the other processes when one fails) stops this one as an
    error that says nothing more, so that the renders it is writing are removed (the atomic writes' clean-up) and
    its exit status is 143."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        exc = FCPoseError("stopped by SIGTERM")
        exc.quiet, exc.exit_code = True, 128 + signum
        raise exc

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """What a predict run has done so far: the counts for the summary line, the failures, and the "skipped" lines
    that wait for the first input that works (if none does, the run ends with one error line instead)."""

    def __init__(self, out_dir: Path, predictor: PosePredictor, renderer: PeopleRenderer, problems: list[str],
                 say, *, progress: bool, warmup: bool = False):
        self.out_dir, self.predictor, self.renderer, self.say = out_dir, predictor, renderer, say
        self.progress, self.warmup = progress, warmup
        self.used: set[str] = set()  # output names taken
        self.failures = list(problems)
        self.held = [f"skipped: {problem}" for problem in problems]
        self.done, self.people, self.seconds, self.frames, self.video_frames = 0, 0, 0.0, 0, 0

    def skipped(self, exc: Exception) -> None:
        self.failures.append(str(exc))
        if self.done:
            self.say(f"skipped: {exc}")
        else:
            self.held.append(f"skipped: {exc}")

    def succeeded(self) -> None:
        while self.held:
            self.say(self.held.pop(0))

    def counts(self) -> tuple:
        return self.done, self.people, self.seconds, self.frames, self.video_frames, self.failures

    def add(self, counts: tuple) -> None:
        """Add another process's :meth:`counts` (its lines were said by that process)."""
        done, people, seconds, frames, video_frames, failures = counts
        self.done, self.people, self.seconds = self.done + done, self.people + people, self.seconds + seconds
        self.frames, self.video_frames = self.frames + frames, self.video_frames + video_frames
        self.failures.extend(failures)


def _predict_into(out_dir: Path, sources: list[Source], remote: list[str], problems: list[str],
                  predictor: PosePredictor, ids_by_name: dict[str, int], say, *, render: bool,
                  draw_threshold: float, keypoint_threshold: float | None, draw_nms: float, progress: bool,
                  warmup: bool) -> int:
    """The body of :func:`run_predict` once the model is loaded and ``out_dir`` exists: this process's share of the
    image batches and videos (all of them in one process), then live or remote sources; predictions.json (rank 0)
    and the summary line."""
    domain = _DomainCheck(predictor, say)
    renderer = PeopleRenderer(predictor, draw_threshold, keypoint_threshold, draw_nms)
    main = dist.is_main_process()
    run = _Run(out_dir, predictor, renderer, problems if main else [], say, progress=progress,
               warmup=warmup)
    images, videos = [s for s in sources if s.kind == "image"], [s for s in sources if s.kind == "video"]
    # the renders' names in one process's order, so that every process names its share alike
    names = [unique_output_path(out_dir, s.path, ".jpg" if s.kind == "image" else ".mp4", run.used) if render
             else None for s in images + videos]
    named = list(zip(images + videos, names))
    units = list(_batched(named[:len(images)], max(1, int(getattr(predictor, "batch_size", 1)))))
    units += [[pair] for pair in named[len(images):]]  # a whole video
    mine = dist.shard(units)
    bar = tqdm(total=sum(len(u) for u in mine if u[0][0].kind == "image"), desc="images", unit="img",
               disable=not progress or not main or len(images) < 2, file=sys.stderr)
    parts = []
    for unit in mine:
        if unit[0][0].kind == "image":
            parts.append(_predict_images(run, unit, ids_by_name, domain, bar))
        else:
            parts.append(_predict_video_unit(run, *unit[0], domain))
    bar.close()
    results = _collect(run, parts)
    if remote:
        from .remote import predict_remote

        more, remote_failures, interrupted = predict_remote(predictor, remote, out_dir, renderer, render, progress,
                                                            run.used, sole=not sources and len(remote) == 1)
        results.extend(more)
        run.failures.extend(remote_failures)
        run.done += len(remote) - len(remote_failures)
        if run.done:
            run.succeeded()
        if interrupted:
            path = atomic_write_text(out_dir / "predictions.json", json.dumps(results), what="predictions")
            say(f"interrupted: {len(results)} detections so far -> {path}")
            return 130
    return _finish(run, results, len(remote) - len(remote_failures) if remote else None, draw_threshold)


def _collect(run: _Run, parts: list[list[dict]]) -> list[dict] | None:
    """Every process's entries in one process's order (rank 0; None on the others), and every process's counts
    added to ``run``. Under torchrun a process that stopped (its error line is above) stops this one too."""
    if dist.get_world_size() == 1:
        return [entry for part in parts for entry in part]
    try:
        others = dist.all_gather_object(run.counts())
        merged = dist.gather_shards(parts)
    except RuntimeError as exc:  # gloo/NCCL: a process ended (its error is said above) or the connection broke
        detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line(exc)).split(". ")[0]  # gloo: "[file:line] What. Hint"
        error = FCPoseError(f"stopped: another process of this torchrun run failed (see above) or could not be "
                            f"reached ({detail}); predictions.json was not written")
        error.quiet = not dist.is_main_process()
        raise error from None
    mine = dist.get_rank()
    for rank, counts in enumerate(others):
        if rank != mine:
            run.add(counts)
    if run.done:
        run.succeeded()  # this process's held lines, now that some input worked somewhere
    return None if merged is None else [entry for part in merged for entry in part]


def _predict_images(run: _Run, chunk: list[tuple[Source, Path | None]], ids_by_name: dict[str, int],
                    domain: _DomainCheck, bar) -> list[dict]:
    """One batch of images (the predictor runs those of equal size together), rendered to their names; returns their
    entries. Each line gives an image's share of the call's time. ``run.warmup``: the first image that could be read
    runs once, untimed, first."""
    predictor, renderer, say = run.predictor, run.renderer, run.say
    loaded = []
    for src, name in chunk:
        try:
            loaded.append((src, name, read_image(src.path)))
        except InputError as exc:
            run.skipped(exc)
            bar.update(1)
            continue
        domain(src)
    if not loaded:
        return []
    if run.warmup:
        run.warmup, start = False, time.perf_counter()
        predictor(loaded[0][2])
        say(f"warm-up: a first, untimed run on {loaded[0][0].path.name} took "
            f"{(time.perf_counter() - start) * 1000:.0f} ms (memory allocation and kernel selection happen on "
            "a model's first call)")
    start = time.perf_counter()
    outputs = predictor.predict([image for _, _, image in loaded])
    elapsed = (time.perf_counter() - start) / len(loaded)
    shared = f" (a batch of {len(loaded)})" if len(loaded) > 1 else ""
    entries: list[dict] = []
    for (src, name, image), dets in zip(loaded, outputs):
        shown = renderer.select(dets)
        entries.extend(dets.to_coco(image_id=image_id(src.path, ids_by_name), file_name=src.path.name))
        if name is not None:
            save_image(name, renderer(image, dets, shown))
        run.succeeded()
        run.done, run.people, run.seconds, run.frames = (run.done + 1, run.people + len(shown),
                                                         run.seconds + elapsed, run.frames + 1)
        say(f"{src.path.name}: {_people(len(shown))} (score >= {renderer.draw_threshold:g}), "
            f"{elapsed * 1000:.0f} ms{shared}")
        bar.update(1)
    return entries


def _predict_video_unit(run: _Run, src: Source, name: Path | None, domain: _DomainCheck) -> list[dict]:
    """One whole video (a failure to open it is one skipped input); returns its entries."""
    try:
        entries, n_frames, _, elapsed = _predict_video(run.predictor, src, name, run.renderer,
                                                       run.progress and dist.is_main_process(), run.say,
                                                       lambda: domain(src))
    except InputError as exc:
        run.skipped(exc)
        return []
    run.succeeded()
    run.done, run.seconds = run.done + 1, run.seconds + elapsed
    run.frames, run.video_frames = run.frames + n_frames, run.video_frames + n_frames
    return entries


def _finish(run: _Run, results: list[dict] | None, remote_done: int | None, draw_threshold: float) -> int:
    """Write predictions.json (``results``; None: not this process's to write) and say what was done;
    ``remote_done``: the live or remote sources that worked (None without any). Returns the exit status; nothing
    done at all is an :class:`InputError` (said by rank 0)."""
    failures, frames, video_frames = run.failures, run.frames, run.video_frames
    if not run.done:
        error = InputError(failures[0] if len(failures) == 1 else
                           f"none of the {len(failures)} inputs could be used: " + "; ".join(failures))
        error.quiet = results is None
        raise error
    if results is not None:
        path = atomic_write_text(run.out_dir / "predictions.json", json.dumps(results), what="predictions")
    # every process waits for rank 0's file: torchrun stops them all as soon as one exits with a non-zero status
    dist.barrier()
    if results is None:
        return 1 if failures else 0
    parts = []
    if frames > video_frames:
        n = frames - video_frames
        parts.append(f"{n} image{'s' if n != 1 else ''}: {_people(run.people)} (score >= {draw_threshold:g})")
    if video_frames:
        parts.append(f"{video_frames} video frame{'s' if video_frames != 1 else ''}")
    if remote_done is not None:
        parts.append(f"{remote_done} live or remote source(s)")
    what = "image" if not video_frames else "frame" if frames == video_frames else "image or frame"
    world = dist.get_world_size()
    rate = "" if run.seconds <= 0 or not frames else (
        f", {run.seconds / frames * 1000:.0f} ms per {what}" +
        (f" ({frames / run.seconds:.1f}/s)" if world == 1 else f" in each of {world} processes"))
    run.say(f"{'; '.join(parts)}{rate} -> {path} (all {len(results)} detections with score >= "
            f"{run.predictor.params.score_threshold:g})", own=False)
    if failures:
        run.say(f"{len(failures)} of {len(failures) + run.done} input(s) failed (listed above)", own=False)
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


def _predict_video(predictor: Predictor, src: Source, render_to: Path | None, renderer: PeopleRenderer,
                   progress: bool, say, opened=lambda: None) -> tuple[list[dict], int, int, float]:
    """Every frame of a video; entries carry the video's file name and the 0-based ``frame`` index; the rendered video
    goes to ``render_to`` (None: none). ``opened()`` is called once the video could be opened. Returns (entries,
    frames, people drawn over all frames, seconds of inference)."""
    results: list[dict] = []
    frame_index, people, seconds = 0, 0, 0.0
    with VideoReader(src.path) as reader, ExitStack() as stack:
        opened()
        writer = None
        if render_to is not None:
            writer = stack.enter_context(VideoWriter(render_to, reader.fps, reader.width, reader.height))
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
                shown = renderer.select(dets)
                people += len(shown)
                if writer is not None:
                    writer.write(renderer(frame, dets, shown))
                frame_index += 1
            bar.update(len(batch))
    per_frame = people / frame_index if frame_index else 0.0
    rate = f"{frame_index / seconds:.1f} frames/s" if seconds > 0 else ""
    written = f" -> {writer.path.name} ({writer.codec_note})" if writer is not None else ""
    say(f"{src.path.name}: {frame_index} frames, {per_frame:.1f} people per frame (score >= "
        f"{renderer.draw_threshold:g}), {rate}{written}")
    return results, frame_index, people, seconds
