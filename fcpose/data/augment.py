"""Joint augmentation of an image and its people: random crop, random resize, horizontal flip (Sec. 4).

An image is ``uint8 [H, W, 3]`` RGB (numpy). Its *target* is a dict of float32 numpy arrays in continuous
pixel coordinates of that image (pixel ``i`` spans ``[i, i + 1)``):

- ``boxes``        ``[G, 4]``    xyxy of the people,
- ``keypoints``    ``[G, K, 3]`` (x, y, v) of the same people; v = 0 unlabelled (then x = y = 0), 1
  labelled but occluded, 2 visible,
- ``ignore_boxes`` ``[C, 4]``    xyxy of crowd regions (neither positive nor negative for the detector).

Other keys are passed through unchanged. Every transform is a pure function of its inputs and a
``numpy.random.Generator``, so a seeded generator gives the same result every time.

The training pipeline follows the official FCPose (detectron2 augmentations in this order):

1. **crop** a region of relative size ``(U[a, b], U[a, b])`` of (height, width) — detectron2's
   ``"relative_range"`` crop — placed so that the box centre of a randomly chosen person is inside it;
   people cut below ``min_visible`` of their area (or below ``min_box_size`` pixels) become ignore regions,
   keypoints outside the crop become unlabelled. A few tries are made to keep at least one person; if
   none succeeds the image is not cropped. Without people the crop is anywhere.
2. **resize** so that the short side is ``randint(min_size[0], min_size[1])`` and the long side at most
   ``max_size`` (detectron2 ``ResizeShortestEdge``, ``"range"`` sampling; PIL bilinear). Coordinates scale
   by exactly ``new_w / w`` and ``new_h / h``.
3. **flip** horizontally with probability ``flip_prob``: ``x' = W - x`` for keypoints, ``[W - x2, W - x1]``
   for boxes, and keypoint k becomes keypoint ``flip_index[k]`` (left <-> right)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .transforms import resize_image, resize_shape

Target = dict[str, np.ndarray]


def _copy(target: Target) -> Target:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in target.items()}


def _zero_unlabelled(keypoints: np.ndarray) -> np.ndarray:
    """COCO convention: unlabelled keypoints (v = 0) have x = y = 0."""
    keypoints[keypoints[..., 2] <= 0] = 0.0
    return keypoints


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` xyxy -> ``[N]`` areas (negative sides count as 0)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def clip_boxes_np(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """Clip ``[N, 4]`` xyxy boxes to ``[0, width] x [0, height]``."""
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


# ---- Deterministic target transforms ---------------------------------------------------------
def resize_targets(target: Target, scale_x: float, scale_y: float) -> Target:
    """Scale every coordinate: ``x' = x * scale_x``, ``y' = y * scale_y`` (continuous pixel coordinates)."""
    out = _copy(target)
    scale = np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
    out["boxes"] = (target["boxes"] * scale).astype(np.float32)
    out["ignore_boxes"] = (target["ignore_boxes"] * scale).astype(np.float32)
    kp = target["keypoints"].copy()
    kp[..., 0] *= scale_x
    kp[..., 1] *= scale_y
    out["keypoints"] = _zero_unlabelled(kp.astype(np.float32))
    return out


def hflip_targets(target: Target, width: float, flip_index: Sequence[int]) -> Target:
    """Mirror an image of ``width`` pixels: ``x' = width - x``, boxes ``[W - x2, y1, W - x1, y2]``, and
    keypoint ``flip_index[k]`` of the result is keypoint k of the input (left and right swap)."""
    out = _copy(target)
    for key in ("boxes", "ignore_boxes"):
        b = target[key]
        out[key] = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
    kp = target["keypoints"].copy()
    kp[..., 0] = width - kp[..., 0]
    index = np.asarray(flip_index, dtype=np.int64)
    if kp.shape[1] != index.shape[0]:
        raise ValueError(f"flip_index has {index.shape[0]} entries for {kp.shape[1]} keypoints")
    kp = kp[:, index]
    out["keypoints"] = _zero_unlabelled(kp)
    return out


def crop_targets(target: Target, x0: float, y0: float, width: float, height: float, *, min_box_size: float = 1.0,
                 min_visible: float = 0.1) -> tuple[Target, np.ndarray]:
    """The target seen through the window ``[x0, x0 + width] x [y0, y0 + height]`` (in its pixels). Boxes are shifted
    and clipped to the window. A person whose clipped box is narrower or lower than ``min_box_size`` pixels, or keeps
    less than ``min_visible`` of its area, is removed; a removed person whose clipped box is not empty becomes an ignore
    region (part of a person is neither a person to detect nor background). Keypoints outside the window (inclusive
    bounds) become unlabelled. Returns the new target and the ``[G]`` bool mask of the kept people."""
    shift = np.array([x0, y0, x0, y0], np.float32)
    boxes = target["boxes"] - shift
    clipped = clip_boxes_np(boxes, height, width)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    area = box_areas(boxes)
    visible = np.where(area > 0, box_areas(clipped) / np.maximum(area, 1e-12), 0.0)
    keep = (w >= min_box_size) & (h >= min_box_size) & (visible >= min_visible)
    partial = ~keep & (w > 0) & (h > 0)

    ignore = clip_boxes_np(target["ignore_boxes"] - shift, height, width)
    ignore = ignore[(ignore[:, 2] > ignore[:, 0]) & (ignore[:, 3] > ignore[:, 1])]

    kp = target["keypoints"][keep].copy()
    kp[..., 0] -= x0
    kp[..., 1] -= y0
    inside = (kp[..., 0] >= 0) & (kp[..., 0] <= width) & (kp[..., 1] >= 0) & (kp[..., 1] <= height)
    kp[..., 2] = np.where(inside, kp[..., 2], 0.0)

    out = _copy(target)
    out["boxes"] = clipped[keep].astype(np.float32)
    out["keypoints"] = _zero_unlabelled(kp.astype(np.float32))
    out["ignore_boxes"] = np.concatenate([ignore, clipped[partial]], axis=0).astype(np.float32)
    return out, keep


# ---- Random parameters -----------------------------------------------------------------------
def sample_short_side(rng: np.random.Generator, min_size: Sequence[int]) -> int:
    """detectron2 ``"range"`` sampling: an integer uniformly in ``[min_size[0], min_size[1]]`` (inclusive)."""
    lo, hi = int(min_size[0]), int(min_size[-1])
    return int(rng.integers(lo, hi + 1))


def sample_crop_size(rng: np.random.Generator, height: int, width: int, crop_range: Sequence[float]) -> tuple[int, int]:
    """detectron2 ``"relative_range"``: relative (height, width) each uniform in ``[a, b]`` -> pixels (h, w)."""
    lo, hi = float(crop_range[0]), float(crop_range[1])
    rel = lo + rng.random(2) * (hi - lo)
    ch = min(max(int(height * rel[0] + 0.5), 1), height)
    cw = min(max(int(width * rel[1] + 0.5), 1), width)
    return ch, cw


def sample_crop_origin(rng: np.random.Generator, height: int, width: int, crop_h: int, crop_w: int,
                       boxes: np.ndarray) -> tuple[int, int]:
    """Integer (x0, y0) of a ``crop_h x crop_w`` window inside the image. With people (``boxes`` ``[G, 4]``, G > 0) one
    of them is drawn and the window is placed uniformly among the positions that contain its (clipped) box centre;
    otherwise uniformly anywhere."""
    if boxes.shape[0] == 0:
        return int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    box = clip_boxes_np(boxes[int(rng.integers(0, boxes.shape[0]))][None], height, width)[0]
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    origin = []
    for c, size, limit in ((cx, crop_w, width), (cy, crop_h, height)):
        lo = max(0, math.ceil(c - size))
        hi = min(limit - size, math.floor(c))
        origin.append(int(rng.integers(lo, max(lo, hi) + 1)))
    return origin[0], origin[1]


# ---- Pipelines -------------------------------------------------------------------------------
class TrainTransform:
    """The training augmentation: crop -> resize -> flip (see the module docstring). Call as
    ``image, target = transform(image, target, rng)`` with a ``numpy.random.Generator``.

    Args:
        min_size: (low, high) of the random short side.
        max_size: The longest the long side may get.
        flip_index: Each keypoint's mirror keypoint; ``None`` only without flipping.
        crop_range: (low, high) of the random crop's relative size; ``None``: no crop.
        flip_prob: The probability of a horizontal flip.
        crop_attempts: Crops tried before keeping the whole image (a crop must keep a person).
        min_box_size: People whose cropped box is narrower or lower than this many pixels become ignore regions.
        min_visible: People keeping less than this fraction of their box area in a crop become ignore regions.

    Raises:
        ValueError: ``flip_prob > 0`` without a ``flip_index``.
    """

    def __init__(self, min_size: Sequence[int], max_size: int, flip_index: Sequence[int] | None, *,
                 crop_range: Sequence[float] | None = (0.4, 1.0), flip_prob: float = 0.5, crop_attempts: int = 10,
                 min_box_size: float = 1.0, min_visible: float = 0.1):
        if flip_prob > 0 and flip_index is None:
            raise ValueError("a random flip needs the keypoint flip_index")
        self.min_size = (int(min_size[0]), int(min_size[-1]))
        self.max_size = int(max_size)
        self.flip_index = None if flip_index is None else list(flip_index)
        self.crop_range = None if crop_range is None else (float(crop_range[0]), float(crop_range[1]))
        self.flip_prob = float(flip_prob)
        self.crop_attempts = int(crop_attempts)
        self.min_box_size = float(min_box_size)
        self.min_visible = float(min_visible)

    @classmethod
    def from_config(cls, cfg) -> TrainTransform:
        """From an :class:`~fcpose.config.FCPoseConfig` (``input`` and ``keypoints``).

        Args:
            cfg: The model's config.

        Returns:
            The transform.
        """
        inp = cfg.input
        return cls(inp.min_size_train, inp.max_size_train, cfg.keypoints.flip_index(),
                   crop_range=inp.crop_range if inp.crop else None, flip_prob=0.5 if inp.flip else 0.0,
                   min_box_size=inp.min_box_size, min_visible=inp.crop_min_visible)

    def crop(self, image: np.ndarray, target: Target, rng: np.random.Generator) -> tuple[np.ndarray, Target]:
        """A random crop that keeps at least one person (the whole image after ``crop_attempts`` failures).

        Args:
            image: An RGB ``uint8 [H, W, 3]`` image.
            target: Its ``boxes``, ``keypoints`` and ``ignore_boxes``, in its pixels.
            rng: The random generator.

        Returns:
            The cropped image and target.
        """
        height, width = image.shape[:2]
        boxes = target["boxes"]
        for _ in range(max(self.crop_attempts, 1)):
            ch, cw = sample_crop_size(rng, height, width, self.crop_range)
            x0, y0 = sample_crop_origin(rng, height, width, ch, cw, boxes)
            cropped, keep = crop_targets(target, x0, y0, cw, ch, min_box_size=self.min_box_size,
                                         min_visible=self.min_visible)
            if boxes.shape[0] == 0 or keep.any():
                return image[y0:y0 + ch, x0:x0 + cw], cropped
        return image, target

    def __call__(self, image: np.ndarray, target: Target, rng: np.random.Generator) -> tuple[np.ndarray, Target]:
        """Crop, resize and flip ``image`` and ``target`` together.

        Args:
            image: An RGB ``uint8 [H, W, 3]`` image.
            target: Its ``boxes``, ``keypoints`` and ``ignore_boxes``, in its pixels.
            rng: The random generator.

        Returns:
            The augmented image and target.
        """
        if self.crop_range is not None:
            image, target = self.crop(image, target, rng)
        height, width = image.shape[:2]
        new_h, new_w = resize_shape(height, width, sample_short_side(rng, self.min_size), self.max_size)
        image = resize_image(np.ascontiguousarray(image), new_h, new_w)
        target = resize_targets(target, new_w / width, new_h / height)
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            image = image[:, ::-1]
            target = hflip_targets(target, new_w, self.flip_index)
        return np.ascontiguousarray(image), target


class TestTransform:
    """Resize so that the short side is ``min_size`` and the long side at most ``max_size``; no randomness.
    ``image, target = transform(image, target=None, rng=None)``; the target (if any) is scaled with the image.

    Args:
        min_size: The short side.
        max_size: The longest the long side may get.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, min_size: int, max_size: int):
        self.min_size = int(min_size)
        self.max_size = int(max_size)

    @classmethod
    def from_config(cls, cfg) -> TestTransform:
        """From the config's test sizes (``input.min_size_test``, ``input.max_size_test``).

        Args:
            cfg: The model's config.

        Returns:
            The transform.
        """
        return cls(cfg.input.min_size_test, cfg.input.max_size_test)

    def __call__(self, image: np.ndarray, target: Target | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, Target | None]:
        """Resize ``image`` (and scale ``target`` with it).

        Args:
            image: An RGB ``uint8 [H, W, 3]`` image.
            target: Its targets, or ``None``.
            rng: Unused (the same call as ``TrainTransform``).

        Returns:
            The resized image and target.
        """
        height, width = image.shape[:2]
        new_h, new_w = resize_shape(height, width, self.min_size, self.max_size)
        image = resize_image(np.ascontiguousarray(image), new_h, new_w)
        if target is not None:
            target = resize_targets(target, new_w / width, new_h / height)
        return image, target
