"""High-level inference: images in, people with keypoints in original-image pixels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..config import InputConfig, TestConfig
from ..data.images import as_rgb_array
from ..data.transforms import (
    batch_images,
    image_to_tensor,
    padded_size,
    resize_image,
    resize_shape,
    resize_tensor,
)
from ..errors import FCPoseError
from ..model.fcpose import FCPose
from ..postprocess import PostProcessor
from ..precision import resolve_device
from ..structures import PoseDetections
from .graphs import choose_bucket
from .runner import InferenceRunner

PREPROCESS = ("auto", "host", "device")


class Predictor:
    """Run an FCPose model on images.

    ``predictor(image)`` takes a path or an RGB ``uint8 [H, W, 3]`` array and returns
    :class:`~fcpose.structures.PoseDetections` in that image's pixels; :meth:`predict` takes a list.
    Images are resized so the short side is ``min_size`` (long side at most ``max_size``; defaults from
    the model's config, or the :class:`~fcpose.config.InputConfig` defaults for a model built from parts),
    normalised and padded to the size divisibility. Images are batched (up to ``batch_size``) only with
    others of the same padded size (or CUDA-graph bucket), so results never depend on the batch.

    ``preprocess``: where the resize, normalisation and padding run — ``"host"`` (PIL on the CPU, then the
    float image goes to the device: the reference, and the default on a CPU) or ``"device"`` (only the
    uint8 image goes to the device, through pinned memory, and :func:`~fcpose.data.transforms.resize_tensor`
    resizes it there: the default on a GPU). ``"auto"`` picks by device. The two resizes differ by a grey
    level on a few pixels (docs/gpu.md: the effect on keypoints and AP).

    ``postprocessor`` (default :meth:`PostProcessor.from_model`: the config's test parameters) turns the
    network's outputs into people. ``optimize=True`` (the default everywhere: ``fcpose predict``, ``eval``,
    ``track`` and ``bench`` run the same network) runs a folded, channels-last copy of the model;
    ``optimize=False`` runs the model as given. ``precision`` ("fp32", "bf16", "fp16") sets the network's
    precision and ``compile`` wraps it in ``torch.compile``; ``runner_options`` go to the
    :class:`~fcpose.inference.runner.InferenceRunner` (``channels_last``, ``inplace``, ``cast_weights``,
    ``sync_free``, ``cuda_graphs``, ``buckets``, ``batch_sizes``, ``max_graphs``).
    """

    def __init__(self, model: FCPose, postprocessor: PostProcessor | None = None, *,
                 device: str | torch.device = "cpu", min_size: int | None = None, max_size: int | None = None,
                 score_threshold: float | None = None, batch_size: int = 4, optimize: bool = True,
                 precision: str = "fp32", compile: bool = False, preprocess: str = "auto", **runner_options):
        cfg = model.cfg
        self.device = resolve_device(device)
        if preprocess not in PREPROCESS:
            raise FCPoseError(f"unknown preprocess {preprocess!r} (choose from {', '.join(PREPROCESS)})")
        self.preprocess = ("device" if self.device.type == "cuda" else "host") if preprocess == "auto" else preprocess
        post = postprocessor or PostProcessor.from_model(model)
        if score_threshold is not None:
            post = post.with_params(score_threshold=float(score_threshold))
        # what the weights were trained on, from the checkpoint's metadata ("synthetic", "COCO", ...; None: unknown)
        self.trained_on = model.trained_on
        self.runner = InferenceRunner(model, post, device=self.device, optimize=optimize, precision=precision,
                                      compile=compile, **runner_options)
        self.model = self.runner.model
        sizes = cfg.input if cfg is not None else InputConfig()
        self.min_size = int(min_size or sizes.min_size_test)
        self.max_size = int(max_size or sizes.max_size_test)
        self.batch_size = max(1, int(batch_size))
        self.cfg = cfg
        graphs = self.runner.graphs
        if self.preprocess == "device" and graphs is not None and graphs.buckets is None:
            self.runner.graph_pixels(self._prepare_frames)

    @property
    def postprocessor(self) -> PostProcessor:
        return self.runner.postprocessor

    @property
    def size_divisibility(self) -> int:
        """Inputs are zero-padded to multiples of this (as :class:`~fcpose.export.onnx_predictor.OnnxPredictor`'s)."""
        return int(self.model.size_divisibility)

    @property
    def params(self) -> TestConfig:
        """The test-time parameters in use (score threshold, top-k, NMS, detections per image)."""
        return self.runner.postprocessor.params

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs) -> Predictor:
        """Load a checkpoint (fcpose, official AdelaiDet, or a model-zoo name) and wrap it."""
        from ..weights.checkpoint import load_model

        return cls(load_model(path, device="cpu"), device=device, **kwargs)

    # ------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB uint8 image -> (normalised float32 ``[3, h, w]`` tensor on the device, its resized (h, w)), by
        the ``preprocess`` path."""
        h, w = resize_shape(image.shape[0], image.shape[1], self.min_size, self.max_size)
        if self.preprocess == "device":
            tensor = resize_tensor(self.runner.upload([image], self.device)[0], h, w)
        else:
            tensor = image_to_tensor(resize_image(image, h, w)).to(self.device)
        return self.model.normalize(tensor), (h, w)

    def _prepare_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` frames of one size on the device -> the normalised network input, padded to
        the size divisibility: :meth:`prepare` and :func:`batch_images` for a batch, from its shape alone (what
        the runner captures in a graph together with the network; see ``InferenceRunner.graph_pixels``)."""
        h, w = resize_shape(int(frames.shape[-2]), int(frames.shape[-1]), self.min_size, self.max_size)
        ph, pw = padded_size(h, w, self.size_divisibility)
        return F.pad(self.model.normalize(resize_tensor(frames, h, w)), (0, pw - w, 0, ph - h))

    def _predict_frames(self, arrays: list[np.ndarray], results: list[PoseDetections | None]) -> None:
        """Fill ``results`` for the images the runner takes as uint8 frames (device preprocessing with CUDA
        graphs: one graph per frame size, from upload to people); the others stay None."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, array in enumerate(arrays):
            groups.setdefault(array.shape, []).append(i)
        for (height, width, _), members in groups.items():
            size = resize_shape(height, width, self.min_size, self.max_size)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                dets = self.runner.pixels([arrays[i] for i in chunk], [size] * len(chunk),
                                          [(height, width)] * len(chunk))
                if dets is None:
                    break  # no graph for this size: the usual route
                for i, d in zip(chunk, dets):
                    results[i] = d

    @torch.inference_mode()
    def _run(self, tensors: list[torch.Tensor], input_sizes, output_sizes) -> list[PoseDetections]:
        batch = batch_images(tensors, self.size_divisibility)
        dets = self.runner(batch, input_sizes, output_sizes)
        return [d.to("cpu") for d in dets]

    def predict(self, images: list) -> list[PoseDetections]:
        """A list of paths / RGB arrays -> one :class:`PoseDetections` per image, in the same order."""
        arrays = [as_rgb_array(im) for im in images]
        results: list[PoseDetections | None] = [None] * len(arrays)
        if self.runner.pixel_graphs is not None:
            self._predict_frames(arrays, results)
        prepared = {i: self.prepare(arrays[i]) for i in range(len(arrays)) if results[i] is None}
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, size) in prepared.items():
            groups.setdefault(self._group(size), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                dets = self._run([prepared[i][0] for i in chunk], [prepared[i][1] for i in chunk],
                                 [arrays[i].shape[:2] for i in chunk])
                for i, d in zip(chunk, dets):
                    results[i] = d
        return results  # type: ignore[return-value]

    def batch_key(self, height: int, width: int) -> tuple[int, ...]:
        """Images of ``height x width`` pixels run in one network call exactly with others of the same key (what
        a caller that gathers images into batches, such as ``fcpose serve``, groups by): the image size when
        frames are graphed by size, else the network input's size (:meth:`_group`)."""
        if self.runner.pixel_graphs is not None and self.runner.pixel_graphs.would_replay(1, height, width):
            return (height, width, 0)  # a frame graph (its own key space: raw sizes, not padded ones)
        return self._group(resize_shape(height, width, self.min_size, self.max_size))

    def _group(self, size: tuple[int, int]) -> tuple[int, int]:
        """Images run together when their network input has the same size: the padded size, or the CUDA-graph
        bucket it is padded to (each image's input is then the same whatever shares its batch)."""
        padded = padded_size(*size, self.model.size_divisibility)
        graphs = self.runner.graphs
        if graphs is not None and graphs.buckets is not None:
            bucket = choose_bucket(1, padded[0], padded[1], graphs.buckets)
            if bucket is not None:
                return bucket[1], bucket[2]
        return padded

    def __call__(self, image) -> PoseDetections:
        return self.predict([image])[0]

    def track(self, frames, *, tracker=None, smooth: bool | None = None, fps: float | None = None,
              realtime: bool = False):
        """Track people across frames: an iterator of :class:`~fcpose.tracking.TrackedPeople`, one per frame.

        ``frames``: an iterable of RGB ``uint8`` arrays or image paths, or one video file, stream URL or
        webcam index (``"0"``). ``tracker``: a :class:`~fcpose.config.TrackerConfig` (default: the
        checkpoint's ``tracker`` section) or a :class:`~fcpose.tracking.PoseTracker` to continue.
        ``smooth`` switches One-Euro keypoint smoothing on or off; ``fps`` is its time base (default: the
        video's, else 25). See :mod:`fcpose.inference.track`.
        """
        from .track import iter_track

        return iter_track(self, frames, tracker=tracker, smooth=smooth, fps=fps, batch_size=1, realtime=realtime)
