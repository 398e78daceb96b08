"""Synthetic multi-person pose scenes written as COCO person-keypoint datasets, and tracking clips.

Each person is an articulated figure on the COCO 17-keypoint skeleton: a small 3-D kinematic tree
with randomised joint angles (standing, walking, sitting, crouching, kneeling, arms up, hands on
hips, random), body yaw, proportions and limb widths, projected orthographically and drawn with
anti-aliased OpenCV primitives. Scenes put 0..N such figures on textured backgrounds with optional
distractor shapes behind and in front of the people.

The stages, one module each (a module imports only those above it in this list):

* :mod:`.pose` — 3-D pose sampling (``sample_figure_pose``); :mod:`.shapes` — 2-D shapes, OpenCV
  drawing and colours;
* :mod:`.figure` — one figure projected into the image as drawing parts (``Figure``);
  :mod:`.background` — textured backgrounds and distractor shapes;
* :mod:`.scene` — scenes of several figures, rendered with annotations and masks (``Scene``,
  ``render_scene``);
* :mod:`.coco_writer` — COCO datasets (``generate_dataset``, ``fcpose synth``); :mod:`.clips` —
  tracking clips (``fcpose synth --video``).

The description that marks a written dataset as synthetic is ``fcpose.config.SYNTH_DESCRIPTION``
(training and ``predict`` read it without importing this package, and with it OpenCV).

Coordinate frames
-----------------
* Inside this package image points are *continuous* pixel coordinates ``(x, y)``, x right and
  y down, where pixel ``i`` spans ``[i, i + 1)`` (the fcpose convention). OpenCV draws in pixel
  centre coordinates, so a point is passed to OpenCV as ``(x - 0.5, y - 0.5)``.
* The annotation files use COCO's own convention (keypoints are pixel indices): a joint at
  continuous ``(u, v)`` is written as ``(u - 0.5, v - 0.5)``. Boxes are pixel-tight
  ``[x0, y0, w, h]`` with ``x0`` the first column of the figure and ``x0 + w`` one past the last
  (continuous pixel-edge coordinates, as detectron2 reads COCO boxes).
* The 3-D body model uses units of the standing height with x to the person's left, y up and z
  forward (out of the chest); the world frame has x right, y up, z towards the camera, and the
  body yaw ``0`` means facing the camera (the person's left side is then on the image right).

Keypoint flags follow COCO: ``v = 2`` labelled and visible, ``v = 1`` labelled but hidden (behind
another figure, a distractor in front, or the person's own body), ``v = 0`` not labelled (outside
the image, or a face point turned away from the camera — then x = y = 0).
"""

from .clips import clip_for, write_clips
from .coco_writer import DEFAULT_IMAGE_SIZE, SIZE_CHOICES, coco_categories, generate_dataset, synth_main
from .figure import Figure, unit_extent
from .pose import sample_figure_pose
from .scene import Rendered, Scene, render_scene, sample_scene

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "SIZE_CHOICES",
    "Figure",
    "Rendered",
    "Scene",
    "clip_for",
    "coco_categories",
    "generate_dataset",
    "render_scene",
    "sample_figure_pose",
    "sample_scene",
    "synth_main",
    "unit_extent",
    "write_clips",
]
