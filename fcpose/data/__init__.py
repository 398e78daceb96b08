"""COCO-keypoints datasets, joint augmentation, batching."""

from .augment import TestTransform, TrainTransform
from .coco import CocoKeypointDataset, keypoint_set_from_category, keypoint_set_from_coco
from .collate import collate, to_model_input

__all__ = ["CocoKeypointDataset", "TestTransform", "TrainTransform", "collate", "keypoint_set_from_category",
           "keypoint_set_from_coco", "to_model_input"]
