"""High-level inference: images in, people with keypoints in original-image pixels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import InputConfig, TestConfig
from ..data.images import as_rgb_array
from ..data.transforms import (
    batch_images,
    image_to_tensor,
    padded_size,
    resize_image,
    resize_shape,
    resize_tensor,
    upload_image,
)
from ..errors import FCPoseError
from ..model.fcpose import FCPose
from ..postprocess import PostProcessor
from ..precision import resolve_device
from ..structures import PoseDetections, PosePredictor
from .runner import InferenceRunner

PREPROCESS = ("auto", "host", "device")


def batch_key(predictor: PosePredictor, height: int, width: int) -> tuple[int, int]:
    """The one batching rule: an image of ``height x width`` pixels runs in one network call only with images
    of the same key, its padded network-input size (``predictor``'s resize rule, then padding to its size
    divisibility), so each image's input, and so its people, are the same whatever shares its batch.
    :meth:`Predictor.predict` (``fcpose predict``, ``track``, ``eval``) and the serve batcher group by it."""
    h, w = resize_shape(height, width, predictor.min_size, predictor.max_size)
    return padded_size(h, w, int(getattr(predictor, "size_divisibility", 1) or 1))


class Predictor:
    """Run an FCPose model on images.

    ``predictor(image)`` takes a path or an RGB ``uint8 [H, W, 3]`` array and returns
    :class:`~fcpose.structures.PoseDetections` in that image's pixels; :meth:`predict` takes a list.
    Images are resized so the short side is ``min_size`` (long side at most ``max_size``; defaults from
    the model's config, or the :class:`~fcpose.config.InputConfig` defaults for a model built from parts),
    normalised and padded to the size divisibility. Images are batched (up to ``batch_size``) only with
    others of the same padded size (:func:`batch_key`), so results never depend on the batch.

    ``preprocess``: where the resize, normalisation and padding run — ``"host"`` (PIL on the CPU, then the
    float image goes to the device: the reference, and the default on a CPU) or ``"device"`` (only the
    uint8 image goes to the device, through pinned memory, and :func:`~fcpose.data.transforms.resize_tensor`
    resizes it there: the default on a GPU). ``"auto"`` picks by device. The two resizes differ by a grey
    level on a few pixels (docs/gpu.md: the effect on keypoints and AP).

    ``postprocessor`` (default :meth:`PostProcessor.from_model`: the config's test parameters) turns the
    network's outputs into people. ``optimize=True`` (the default everywhere: ``fcpose predict``, ``eval``,
    ``track`` and ``bench`` run the same network) runs a folded, channels-last copy of the model;
    ``optimize=False`` runs the model as given. ``precision`` ("fp32", "bf16", "fp16") sets the network's
    precision and ``compile`` wraps it in ``torch.compile``. The device chooses the rest (the
    :class:`~fcpose.inference.runner.InferenceRunner`'s route; docs/gpu.md for CUDA).

    Args:
        model: The network (``build_model``, ``load_model``).
        postprocessor: Turns the network's outputs into people; default: from the model's config.
        device: Where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        min_size: The short side images are resized to; default: the config's test size.
        max_size: The longest the long side may get; default: the config's test size.
        score_threshold: The lowest detection score returned; default: the config's (0.05).
        batch_size: The most images of one padded size run together.
        optimize: Run a folded, channels-last copy of the model.
        precision: The network's precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        compile: Wrap the network in ``torch.compile``.
        preprocess: Where images are resized and normalised: ``"host"``, ``"device"`` or ``"auto"``.

    Raises:
        FCPoseError: An unknown ``preprocess`` or ``precision``, or one ``device`` cannot run (``ConfigError`` when
            CUDA is asked for and absent).
    """

    def __init__(self, model: FCPose, postprocessor: PostProcessor | None = None, *,
                 device: str | torch.device = "cpu", min_size: int | None = None, max_size: int | None = None,
                 score_threshold: float | None = None, batch_size: int = 4, optimize: bool = True,
                 precision: str = "fp32", compile: bool = False, preprocess: str = "auto"):
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
                                      compile=compile)
        self.model = self.runner.model
        sizes = cfg.input if cfg is not None else InputConfig()
        self.min_size = int(min_size or sizes.min_size_test)
        self.max_size = int(max_size or sizes.max_size_test)
        self.batch_size = max(1, int(batch_size))
        self.cfg = cfg

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
        """Load a checkpoint (fcpose, official AdelaiDet, or a model-zoo name) and wrap it.

        Args:
            path: An fcpose checkpoint, an official AdelaiDet ``.pth`` or a model-zoo name (downloaded on first use).
            device: Where the network runs.
            **kwargs: The other options of ``Predictor`` (``min_size``, ``score_threshold``, ``precision``, ...).

        Returns:
            The predictor.

        Raises:
            CheckpointError: The file is missing, unreadable or not a checkpoint.
        """
        from ..weights.checkpoint import load_model

        return cls(load_model(path, device="cpu"), device=device, **kwargs)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB uint8 image -> (normalised float32 ``[3, h, w]`` tensor on the device, its resized (h, w)), by
        the ``preprocess`` path.

        Args:
            image: An RGB ``uint8 [H, W, 3]`` array.

        Returns:
            The network input and its size before padding.
        """
        h, w = resize_shape(image.shape[0], image.shape[1], self.min_size, self.max_size)
        if self.preprocess == "device":
            tensor = resize_tensor(upload_image(image, self.device), h, w)
        else:
            tensor = image_to_tensor(resize_image(image, h, w)).to(self.device)
        return self.model.normalize(tensor), (h, w)

    @torch.inference_mode()
    def _run(self, tensors: list[torch.Tensor], input_sizes, output_sizes) -> list[PoseDetections]:
        batch = batch_images(tensors, self.size_divisibility)
        dets = self.runner(batch, input_sizes, output_sizes)
        return [d.to("cpu") for d in dets]

    def predict(self, images: list) -> list[PoseDetections]:
        """A list of paths / RGB arrays -> one :class:`PoseDetections` per image, in the same order.

        Args:
            images: Image paths and/or RGB ``uint8 [H, W, 3]`` arrays.

        Returns:
            The detections of each image, in its own pixels.

        Raises:
            InputError: An image cannot be read or is not an RGB ``uint8`` array.
        """
        arrays = [as_rgb_array(im) for im in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, array in enumerate(arrays):
            groups.setdefault(batch_key(self, array.shape[0], array.shape[1]), []).append(i)
        results: list[PoseDetections | None] = [None] * len(arrays)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                prepared = [self.prepare(arrays[i]) for i in chunk]
                dets = self._run([t for t, _ in prepared], [size for _, size in prepared],
                                 [arrays[i].shape[:2] for i in chunk])
                for i, d in zip(chunk, dets):
                    results[i] = d
        return results  # type: ignore[return-value]

    def __call__(self, image) -> PoseDetections:
        """The detections of one image (``predict`` of a list of one).

        Args:
            image: An image path or an RGB ``uint8 [H, W, 3]`` array.

        Returns:
            Its detections, in its pixels.
        """
        return self.predict([image])[0]

    def track(self, frames, *, tracker=None, smooth: bool | None = None, fps: float | None = None,
              realtime: bool = False):
        """Track people across frames (:mod:`fcpose.inference.track`): an iterator of one
        :class:`~fcpose.tracking.TrackedPeople` per frame of ``frames`` (RGB ``uint8`` arrays or image paths, or
        one video file, stream URL or webcam index ``"0"``). ``tracker``: a :class:`~fcpose.config.TrackerConfig`
        (default: the checkpoint's) or a :class:`~fcpose.tracking.PoseTracker` to continue; ``smooth``: One-Euro
        keypoint smoothing on or off, ``fps`` its time base (default: the video's, else 25).

        Args:
            frames: RGB ``uint8`` frames or image paths, or one video file, stream URL or webcam index.
            tracker: A ``TrackerConfig`` or a ``PoseTracker`` to continue; default: the checkpoint's tracker settings.
            smooth: One-Euro keypoint smoothing on or off; default: the tracker settings'.
            fps: The frame rate smoothing assumes; default: the video's, else 25.
            realtime: Drop the oldest decoded frames when inference falls behind (for live streams).

        Returns:
            (Iterator[TrackedPeople]): One ``TrackedPeople`` per frame, in order.
        """
        from .track import iter_track

        return iter_track(self, frames, tracker=tracker, smooth=smooth, fps=fps, batch_size=1, realtime=realtime)
