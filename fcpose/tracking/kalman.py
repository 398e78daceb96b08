"""A constant-velocity Kalman filter on a box, in numpy.

State ``[cx, cy, w, h, vcx, vcy, vw, vh]`` (centre, size and their velocities per frame); measurement
``[cx, cy, w, h]``. Process and measurement noise scale with the box size (as in SORT/ByteTrack/BoT-SORT),
so the filter behaves the same for small and large people."""

from __future__ import annotations

import numpy as np


def xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)])


def cxcywh_to_xyxy(z: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (float(v) for v in z[:4])
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """Kalman filter of one box. Standard deviations, as fractions of the box size: ``std_position`` of the
    measurement noise, ``std_process`` / ``std_velocity`` of the per-frame process noise on the position /
    velocity (a small ``std_process`` trusts the constant-velocity motion more than single boxes).

    Args:
        box_xyxy: The first measured box, which starts the filter (velocity 0).
        std_position: The measurement noise, a fraction of the box size.
        std_velocity: The per-frame process noise of the velocity, a fraction of the box size.
        std_process: The per-frame process noise of the position, a fraction of the box size.
    """

    def __init__(self, box_xyxy: np.ndarray, std_position: float = 0.05, std_velocity: float = 0.00625,
                 std_process: float = 0.015):
        self.std_pos = float(std_position)
        self.std_vel = float(std_velocity)
        self.std_proc = float(std_process)
        z = xyxy_to_cxcywh(box_xyxy)
        self.x = np.concatenate([z, np.zeros(4)])
        scale = np.array([z[2], z[3], z[2], z[3]])
        std = np.concatenate([2 * self.std_pos * scale, 10 * self.std_vel * scale])
        self.P = np.diag(std**2)
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def _scale(self) -> np.ndarray:
        w, h = max(self.x[2], 1e-3), max(self.x[3], 1e-3)
        return np.array([w, h, w, h])

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted box (xyxy).

        Returns:
            The predicted box, xyxy.
        """
        s = self._scale()
        q = np.diag(np.concatenate([self.std_proc * s, self.std_vel * s]) ** 2)
        self.x = self.F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1e-3)
        self.P = self.F @ self.P @ self.F.T + q
        return self.box

    def update(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Correct with a measured box (xyxy); returns the filtered box.

        Args:
            box_xyxy: The measured box.

        Returns:
            The filtered box, xyxy.
        """
        z = xyxy_to_cxcywh(box_xyxy)
        r = np.diag((self.std_pos * self._scale()) ** 2)
        s = self.H @ self.P @ self.H.T + r
        k = np.linalg.solve(s, self.H @ self.P).T  # P H^T S^-1 (S symmetric)
        self.x = self.x + k @ (z - self.H @ self.x)
        self.P = (np.eye(8) - k @ self.H) @ self.P
        self.x[2:4] = np.maximum(self.x[2:4], 1e-3)
        return self.box

    @property
    def box(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.x)
