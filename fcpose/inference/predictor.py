"""High-level inference: images in, people with keypoints in original-image pixels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import as_rgb_array
from ..data.transforms import batch_images, image_to_tensor, padded_size, resize_image, resize_shape
from ..errors import FCPoseError
from ..postprocess import DetectionParams
from ..structures import PoseDetections
from .optimize import InferenceRunner


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FCPoseError("--device cuda was requested but CUDA is not available on this machine")
    return dev


class Predictor:
    """Run an FCPose model on images.

    ``predictor(image)`` takes a path or an RGB ``uint8 [H, W, 3]`` array and returns
    :class:`~fcpose.structures.PoseDetections` in that image's pixels; :meth:`predict` takes a list.
    Images are resized so the short side is ``min_size`` (long side at most ``max_size``; defaults from
    the model's config), normalised and padded to the size divisibility. Images are batched (up to
    ``batch_size``) only with others of the same padded size, so results never depend on the batch.

    ``optimize=True`` runs a folded, channels-last copy of the model and the fast keypoint decoder;
    ``precision`` ("fp32", "bf16", "fp16") sets the network's autocast and ``compile`` wraps it in
    ``torch.compile`` (see :mod:`fcpose.inference.optimize`). The defaults run the model as given.
    """

    def __init__(self, model, *, device: str | torch.device = "cpu", min_size: int | None = None,
                 max_size: int | None = None, score_threshold: float | None = None, batch_size: int = 4,
                 optimize: bool = False, precision: str = "fp32", compile: bool = False):
        cfg = model.cfg
        self.device = resolve_device(device)
        self.runner = InferenceRunner(model, device=self.device, optimize=optimize, precision=precision,
                                      compile=compile)
        self.model = self.runner.model
        self.min_size = int(min_size or cfg.input.min_size_test)
        self.max_size = int(max_size or cfg.input.max_size_test)
        self.params = DetectionParams.from_config(cfg.test)
        if score_threshold is not None:
            self.params.score_threshold = float(score_threshold)
        self.batch_size = max(1, int(batch_size))
        self.cfg = cfg
        # what the weights were trained on, from the checkpoint's metadata ("synthetic", "COCO", ...; None: unknown)
        self.trained_on = getattr(model, "trained_on", None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs) -> Predictor:
        """Load a checkpoint (fcpose, official AdelaiDet, or a model-zoo name) and wrap it."""
        from ..weights.checkpoint import load_model

        return cls(load_model(path, device="cpu"), device=device, **kwargs)

    # ------------------------------------------------------------------------------------------
    def _as_array(self, image) -> np.ndarray:
        return as_rgb_array(image)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB uint8 image -> (normalised ``[3, h, w]`` tensor on the device, its resized (h, w))."""
        h, w = resize_shape(image.shape[0], image.shape[1], self.min_size, self.max_size)
        resized = resize_image(image, h, w)
        tensor = image_to_tensor(resized).to(self.device)
        return self.model.normalize(tensor), (h, w)

    @torch.inference_mode()
    def _run(self, tensors: list[torch.Tensor], input_sizes, output_sizes) -> list[PoseDetections]:
        batch = batch_images(tensors, self.model.size_divisibility)
        dets = self.runner(batch, input_sizes, output_sizes, self.params)
        return [d.to("cpu") for d in dets]

    def predict(self, images: list) -> list[PoseDetections]:
        """A list of paths / RGB arrays -> one :class:`PoseDetections` per image, in the same order."""
        arrays = [self._as_array(im) for im in images]
        prepared = [self.prepare(a) for a in arrays]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, size) in enumerate(prepared):
            groups.setdefault(padded_size(*size, self.model.size_divisibility), []).append(i)
        results: list[PoseDetections | None] = [None] * len(arrays)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                dets = self._run([prepared[i][0] for i in chunk], [prepared[i][1] for i in chunk],
                                 [arrays[i].shape[:2] for i in chunk])
                for i, d in zip(chunk, dets):
                    results[i] = d
        return results  # type: ignore[return-value]

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
