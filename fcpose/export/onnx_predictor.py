"""Run an exported FCPose ONNX model (:mod:`fcpose.export.onnx`) with onnxruntime, like :class:`~fcpose.Predictor`.

Same preprocessing (resize rule and PIL resize, normalisation from the config stored in the file, zero
padding to the size divisibility) and the same output path (boxes and keypoints rescaled to the original
image, clipped, empty boxes dropped, :class:`~fcpose.structures.PoseDetections`), so ``fcpose predict
--backend onnxruntime`` writes the same COCO JSON and renderings as the PyTorch backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import TestConfig, from_dict
from ..data.images import as_rgb_array
from ..data.transforms import batch_images, image_to_tensor, resize_image, resize_shape
from ..errors import CheckpointError, FCPoseError, InputError, first_line
from ..postprocess import PostProcessor
from ..structures import Instances, PoseDetections
from ..targets.locations import locations_to_positions
from .onnx import EXPORT_FORMAT, INPUT_NAMES, OUTPUT_NAMES

__all__ = ["OnnxPredictor"]


class OnnxPredictor:
    """``predictor(image)`` / ``predictor.predict(images)`` -> :class:`PoseDetections` in image pixels.

    ``device="cuda"`` uses onnxruntime's CUDA provider when it is installed; ``threads`` sets its
    intra-op threads (default: onnxruntime's).

    Args:
        path: An ``fcpose export`` ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime's CUDA provider).
        min_size: The short side images are resized to; default: the config's test size.
        max_size: The longest the long side may get; default: the config's test size.
        score_threshold: The lowest detection score returned; default: the one exported.
        batch_size: Kept for the common predictor interface (images run one at a time).
        threads: The runtime's intra-op threads; default: the runtime's.

    Raises:
        CheckpointError: The file is missing, unreadable or not an fcpose export.
        FCPoseError: The runtime is not installed, or has no CUDA provider for ``device="cuda"``.
    """

    model_kind = "ONNX model"  # what the errors call the file; subclasses run the same graph on another runtime

    def __init__(self, path: str | Path, *, device: str = "cpu", min_size: int | None = None,
                 max_size: int | None = None, score_threshold: float | None = None, batch_size: int = 1,
                 threads: int | None = None):
        path = Path(path)
        self.session = self._open_session(path, device, threads)
        meta = self._metadata(path)
        try:
            export = json.loads(meta["fcpose_export"])
            if export.get("format") != EXPORT_FORMAT:
                raise KeyError("format")
            cfg = from_dict(json.loads(meta["fcpose_config"]))
        except (KeyError, ValueError, TypeError):
            raise CheckpointError(f"{path} is not an fcpose {self.model_kind} export (no fcpose metadata)") from None
        self.cfg = cfg
        self.export_info = export
        self._check_interface(path, cfg, export)
        self.min_size = int(min_size or cfg.input.min_size_test)
        self.max_size = int(max_size or cfg.input.max_size_test)
        self.size_divisibility = int(export["size_divisibility"])
        self.static_size = tuple(export["size"]) if export.get("size") else None
        cfg.test = TestConfig(**export["detection_params"])  # the parameters the graph was exported with
        self.postprocessor = PostProcessor.from_config(cfg)  # rescaling and splitting, as the torch backend
        if score_threshold is not None:
            self.postprocessor = self.postprocessor.with_params(score_threshold=float(score_threshold))
        self.batch_size = max(1, int(batch_size))
        self.trained_on: str | None = None  # not recorded in exports
        self.mean = torch.tensor(cfg.input.pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(cfg.input.pixel_std, dtype=torch.float32).view(3, 1, 1)
        self.strides = cfg.model.strides

    @property
    def params(self) -> TestConfig:
        """The test-time parameters (the score threshold is a graph input; the others are fixed in it)."""
        return self.postprocessor.params

    def _check_interface(self, path: Path, cfg, export: dict) -> None:
        """The graph's inputs and outputs are the ones the metadata describes (names, K, static size)."""
        inputs, outputs = self._io_shapes()
        problem = None
        if list(inputs) != INPUT_NAMES or list(outputs) != OUTPUT_NAMES:
            problem = f"inputs {list(inputs)} / outputs {list(outputs)}, expected {INPUT_NAMES} / {OUTPUT_NAMES}"
        elif len(outputs["keypoints"]) != 3 or outputs["keypoints"][1] not in (None, cfg.num_keypoints):
            problem = f"keypoints output {outputs['keypoints']}, the config has {cfg.num_keypoints} keypoints"
        elif export.get("size") and [d for d in inputs["image"][2:] if d is not None] not in ([], export["size"]):
            problem = f"image input {inputs['image']}, the metadata says static size {export['size']}"
        if problem:
            raise CheckpointError(f"{path}: the model does not match its fcpose metadata ({problem})")

    def _io_shapes(self) -> tuple[dict[str, list], dict[str, list]]:
        """Input and output shapes by name, in graph order; ``None`` for a dynamic dimension."""
        dims = lambda shape: [d if isinstance(d, int) else None for d in shape]
        return ({i.name: dims(i.shape) for i in self.session.get_inputs()},
                {o.name: dims(o.shape) for o in self.session.get_outputs()})

    def _open_session(self, path: Path, device: str, threads: int | None):
        """The runtime's loaded model (here an onnxruntime ``InferenceSession``)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise FCPoseError("--backend onnxruntime needs onnxruntime (pip install fcpose[export])") from None
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no constant-folding chatter
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise FCPoseError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise CheckpointError(f"cannot load ONNX model {path}: {first_line(exc, 200)}") from None

    def _metadata(self, path: Path) -> dict[str, str]:
        """The export's string metadata (``fcpose_export``, ``fcpose_config``)."""
        return self.session.get_modelmeta().custom_metadata_map

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run of the graph: inputs by name -> outputs by name."""
        outs = self.session.run(None, feeds)
        return {o.name: v for o, v in zip(self.session.get_outputs(), outs)}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """As ``FCPose.normalize``: RGB 0-255 -> the network's channel order, mean and std.

        Args:
            images: ``[..., 3, H, W]`` RGB values in 0-255.

        Returns:
            The normalised images.
        """
        if self.cfg.input.format == "BGR":
            images = images.flip(-3)
        return (images - self.mean) / self.std

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB uint8 image -> (normalised float32 ``[3, h, w]`` tensor, its resized (h, w)).

        Args:
            image: An RGB ``uint8 [H, W, 3]`` array.

        Returns:
            The tensor and its size.
        """
        h, w = resize_shape(image.shape[0], image.shape[1], self.min_size, self.max_size)
        return self.normalize(image_to_tensor(resize_image(image, h, w))), (h, w)

    def pad_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """A normalised ``[3, h, w]`` image -> the graph's ``[1, 3, H, W]`` input (zero-padded; static size checked).

        Args:
            tensor: A normalised ``[3, h, w]`` image.

        Returns:
            The graph's input.

        Raises:
            InputError: The image is larger than a static export's size.
        """
        if self.static_size is None:
            return batch_images([tensor], self.size_divisibility)
        sh, sw = self.static_size
        if tensor.shape[-2] > sh or tensor.shape[-1] > sw:
            raise InputError(f"this {self.model_kind} was exported for {sh}x{sw} inputs; the resized image is "
                             f"{tensor.shape[-2]}x{tensor.shape[-1]} (export with --dynamic, or lower --size)")
        return torch.nn.functional.pad(tensor, (0, sw - tensor.shape[-1], 0, sh - tensor.shape[-2]))[None]

    def run_raw(self, batch: np.ndarray, score_threshold: float | None = None) -> dict[str, np.ndarray]:
        """One ``[1, 3, H, W]`` normalised padded image -> the graph's outputs by name (input pixels).

        Args:
            batch: The graph's ``[1, 3, H, W]`` input.
            score_threshold: The lowest score kept; default ``params.score_threshold``.

        Returns:
            ``boxes``, ``scores``, ``keypoints``, ``levels`` and ``locations``.
        """
        thr = self.params.score_threshold if score_threshold is None else score_threshold
        return self._infer({"image": np.ascontiguousarray(batch, dtype=np.float32),
                            "score_threshold": np.asarray(thr, dtype=np.float32)})

    def _detect(self, image: np.ndarray) -> PoseDetections:
        tensor, resized = self.prepare(image)
        out = self.run_raw(self.pad_input(tensor).numpy())
        levels = torch.from_numpy(out["levels"]).long()
        locations = torch.from_numpy(out["locations"]).float()
        strides = torch.tensor(self.strides)[levels]
        instances = Instances(batch_index=torch.zeros_like(levels), levels=levels,
                              positions=locations_to_positions(locations, strides), locations=locations,
                              boxes=torch.from_numpy(out["boxes"]).float(),
                              scores=torch.from_numpy(out["scores"]).float())
        size = (int(image.shape[0]), int(image.shape[1]))
        keypoints = torch.from_numpy(out["keypoints"]).float()
        instances, keypoints = self.postprocessor.rescale(instances, keypoints, [resized], [size])
        return self.postprocessor.split(instances, keypoints, [size])[0]

    def predict(self, images: list) -> list[PoseDetections]:
        """A list of paths / RGB arrays -> one ``PoseDetections`` per image, in the same order.

        Args:
            images: Image paths and/or RGB ``uint8 [H, W, 3]`` arrays.

        Returns:
            The detections of each image, in its own pixels.

        Raises:
            InputError: An image cannot be read or is not an RGB ``uint8`` array.
        """
        return [self._detect(as_rgb_array(im)) for im in images]

    def __call__(self, image) -> PoseDetections:
        """The detections of one image (``predict`` of a list of one).

        Args:
            image: An image path or an RGB ``uint8 [H, W, 3]`` array.

        Returns:
            Its detections, in its pixels.
        """
        return self.predict([image])[0]
