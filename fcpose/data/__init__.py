"""COCO-keypoints datasets, joint augmentation, batching."""

from .augment import TestTransform, TrainTransform
from .check import DatasetReport, check_dataset
from .coco import CocoKeypointDataset, keypoint_set_from_category, keypoint_set_from_coco
from .collate import collate, to_model_input
from .label_studio import convert_label_studio

__all__ = ["CocoKeypointDataset", "DatasetReport", "TestTransform", "TrainTransform", "check_dataset", "collate",
           "convert_label_studio", "keypoint_set_from_category", "keypoint_set_from_coco", "to_model_input"]
