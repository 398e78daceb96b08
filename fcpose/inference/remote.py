"""``fcpose predict`` on live and remote sources: image URLs, stream URLs (``rtsp://``, ``http(s)://``) and
webcams. Streams go through the threaded pipeline (:mod:`.pipeline`); Ctrl-C ends a stream cleanly: the
rendered video is closed (playable) and renamed from its temporary name, the entries so far are kept and
``predict`` writes ``predictions.json`` before exiting with status 130."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from ..data.video import VideoWriter
from ..errors import InputError
from ..fileio import unique_output_path
from ..structures import PosePredictor
from .pipeline import OrderedSink, Prefetcher
from .sources import DEFAULT_URL_TIMEOUT, StreamReader, is_image_url, read_image_url, source_name
from .visualize import save_image


def predict_remote(predictor: PosePredictor, specs: list[str], out_dir: Path, renderer, render: bool, progress: bool,
                   used: set[str], timeout: float = DEFAULT_URL_TIMEOUT, sole: bool = False
                   ) -> tuple[list[dict], list[str], bool]:
    """Returns ``(COCO result entries, failure lines, interrupted)``. ``sole``: this is the only input, so
    a failure is raised (one line, exit status 2) instead of collected."""

    results: list[dict] = []
    failures: list[str] = []
    for spec in specs:
        name = Path(source_name(spec))
        try:
            if is_image_url(spec):
                image = read_image_url(spec, timeout)
                dets = predictor(image)
                results.extend(dets.to_coco(file_name=name.name + Path(spec).suffix))
                if render:
                    save_image(unique_output_path(out_dir, name, ".jpg", used), renderer(image, dets))
                continue
            target = unique_output_path(out_dir, name, ".mp4", used) if render else None
            if _predict_stream(predictor, spec, target, renderer, progress, results, timeout):
                return results, failures, True
        except InputError as exc:
            if sole:
                raise
            failures.append(str(exc))
            print(f"warning: {exc}", file=sys.stderr)
    return results, failures, False


def _predict_stream(predictor: PosePredictor, spec: str, target: Path | None, renderer, progress: bool,
                    results: list[dict], timeout: float) -> bool:
    """Every frame of a stream (entries carry ``frame``); returns True when stopped by Ctrl-C."""
    name = source_name(spec)
    with ExitStack() as stack:
        reader = stack.enter_context(StreamReader(spec, timeout=timeout))
        state: dict = {}
        if target is not None:
            tmp = target.with_name(f".{target.stem}.partial{target.suffix}")

            def finish() -> None:
                if "writer" in state:
                    state["writer"].close()
                    os.replace(tmp, target)

            def write(item) -> None:
                frame, dets = item
                if "writer" not in state:
                    state["writer"] = VideoWriter(tmp, reader.fps, reader.width, reader.height)
                state["writer"].write(renderer(frame, dets))

            stack.callback(finish)
            sink = stack.enter_context(OrderedSink(write, maxsize=8))
        bar = stack.enter_context(tqdm(total=reader.frame_count or None, desc=name, unit="frame",
                                       disable=not progress, file=sys.stderr))
        pre = stack.enter_context(Prefetcher(reader, maxsize=8))
        try:
            for index, frame in pre:
                dets = predictor(frame)
                for entry in dets.to_coco(file_name=name):
                    entry["frame"] = index
                    results.append(entry)
                if target is not None:
                    sink.put((frame, dets))
                bar.update(1)
        except KeyboardInterrupt:
            return True
    return False
