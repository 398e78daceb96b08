"""Tracking people across video frames: :class:`PoseTracker` (ByteTrack-style association on box IoU and
pose OKS with a box Kalman filter), One-Euro keypoint smoothing, PoseTrack-style JSON and MOT text."""

from .kalman import BoxKalman
from .one_euro import OneEuroFilter
from .posetrack import PoseTrackWriter, load_posetrack, person_entry
from .tracker import PoseTracker, TrackedPeople

__all__ = ["BoxKalman", "OneEuroFilter", "PoseTrackWriter", "PoseTracker", "TrackedPeople", "load_posetrack",
           "person_entry"]
