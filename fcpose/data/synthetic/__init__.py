"""Synthetic multi-person pose scenes written as COCO person-keypoint datasets, and tracking clips.

Each person is an articulated figure on the COCO 17-keypoint skeleton (a small 3-D kinematic tree with
randomised activity, yaw, proportions and limb widths, projected orthographically and drawn with anti-aliased
OpenCV primitives); scenes put 0..N of them on textured backgrounds with distractors behind and in front.
One module per stage, each importing only those before it: :mod:`.pose`, :mod:`.shapes`, :mod:`.figure`,
:mod:`.background`, :mod:`.scene`, :mod:`.coco_writer` (``fcpose synth``), :mod:`.clips` (``--video``).
``fcpose.config.SYNTH_DESCRIPTION`` marks a written dataset as synthetic (read without importing OpenCV).

Coordinate frames: inside this package image points are *continuous* pixels ``(x, y)``, x right, y down, pixel ``i``
spanning ``[i, i + 1)`` (the fcpose convention; OpenCV gets ``(x - 0.5, y - 0.5)``). The annotation files use COCO's
convention (keypoints are pixel indices): a joint at continuous ``(u, v)`` is written as ``(u - 0.5, v - 0.5)``; boxes
are pixel-tight ``[x0, y0, w, h]``, ``x0`` the figure's first column and ``x0 + w`` one past the last (pixel edges, as
detectron2 reads COCO boxes). The 3-D body frame is in :mod:`.pose`. Keypoint flags follow COCO: ``v = 2`` visible,
``v = 1`` labelled but hidden (behind another figure, a distractor or the person's own body), ``v = 0`` not labelled
(outside the image, or a face point turned away — then x = y = 0)."""

from .clips import clip_for, write_clips
from .coco_writer import DEFAULT_IMAGE_SIZE, SIZE_CHOICES, coco_categories, generate_dataset, synth_main
from .figure import Figure, unit_extent
from .pose import sample_figure_pose
from .scene import Rendered, Scene, render_scene, sample_scene

__all__ = [
    "DEFAULT_IMAGE_SIZE", "SIZE_CHOICES", "Figure", "Rendered", "Scene", "clip_for", "coco_categories",
    "generate_dataset", "render_scene", "sample_figure_pose", "sample_scene", "synth_main", "unit_extent",
    "write_clips",
]
