"""The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over keypoints.

For a signal sampled with period ``T_e`` (seconds)::

    alpha(f_c)  = 1 / (1 + tau / T_e),   tau = 1 / (2 pi f_c)
    dx_i        = (x_i - x_hat_{i-1}) / T_e
    dx_hat_i    = alpha(d_cutoff) dx_i + (1 - alpha(d_cutoff)) dx_hat_{i-1}
    f_c         = min_cutoff + beta |dx_hat_i|
    x_hat_i     = alpha(f_c) x_i + (1 - alpha(f_c)) x_hat_{i-1}

The first sample is passed through. ``min_cutoff`` (Hz) sets the smoothing at rest (lower: less jitter), ``beta`` how
fast the cutoff rises with speed (higher: less lag). Each element of the array has its own state and its own last time,
so an element that is skipped (``mask`` False: a low-confidence keypoint) neither moves nor drags the filter, and is
resumed later with the real elapsed time."""

from __future__ import annotations

import math

import numpy as np


def smoothing_factor(cutoff: np.ndarray | float, te: np.ndarray | float) -> np.ndarray:
    """``alpha = 1 / (1 + tau / T_e)`` with ``tau = 1 / (2 pi cutoff)`` (the paper's Eq. for alpha)."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / np.asarray(te, dtype=np.float64))


class OneEuroFilter:
    """One-Euro filter of an array signal of fixed ``shape`` (e.g. ``[K, 2]`` keypoint coordinates). The speed (for the
    adaptive cutoff) is taken per element; pass ``speed_axes`` to use the norm over trailing axes instead
    (``speed_axes=(-1,)`` on ``[K, 2]``: a keypoint's 2-D speed).

    Args:
        min_cutoff: The minimum cutoff frequency (Hz): lower = less jitter at rest.
        beta: The speed coefficient: higher = less lag on fast motion.
        d_cutoff: The cutoff frequency of the speed estimate (Hz).
        speed_axes: The trailing axes whose norm is the speed; ``None``: per element.

    Raises:
        ValueError: ``min_cutoff`` or ``d_cutoff`` is not positive, or ``beta`` is negative.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 speed_axes: tuple[int, ...] | None = None):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.speed_axes = speed_axes
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next sample starts the filter again."""
        self.x_hat: np.ndarray | None = None
        self.dx_hat: np.ndarray | None = None
        self.t_last: np.ndarray | None = None
        self.started: np.ndarray | None = None

    def __call__(self, x: np.ndarray, t: float, mask: np.ndarray | None = None) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds). ``mask`` (broadcastable to ``x``;
        False = skip) leaves those elements' state untouched and returns their raw value.

        Args:
            x: The sample, an array of the filter's shape.
            t: Its time in seconds.
            mask: Which elements to filter (broadcastable to ``x``); ``None``: all.

        Returns:
            The filtered sample (float64).
        """
        x = np.asarray(x, dtype=np.float64)
        use = np.ones(x.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
        if self.x_hat is None or self.x_hat.shape != x.shape:
            self.x_hat = x.copy()
            self.dx_hat = np.zeros_like(x)
            self.t_last = np.full(x.shape, float(t))
            self.started = use.copy()
            return x.copy()
        assert self.dx_hat is not None and self.t_last is not None and self.started is not None
        fresh = use & ~self.started  # first valid sample of an element: pass it through
        te = np.maximum(float(t) - self.t_last, 1e-9)
        dx = (x - self.x_hat) / te
        a_d = smoothing_factor(self.d_cutoff, te)
        dx_hat = a_d * dx + (1.0 - a_d) * self.dx_hat
        speed = np.abs(dx_hat)
        if self.speed_axes is not None:
            speed = np.broadcast_to(np.sqrt((dx_hat**2).sum(axis=self.speed_axes, keepdims=True)), x.shape)
        cutoff = self.min_cutoff + self.beta * speed
        a = smoothing_factor(cutoff, te)
        x_hat = a * x + (1.0 - a) * self.x_hat
        upd = use & self.started
        self.x_hat = np.where(upd, x_hat, np.where(fresh, x, self.x_hat))
        self.dx_hat = np.where(upd, dx_hat, np.where(fresh, 0.0, self.dx_hat))
        self.t_last = np.where(use, float(t), self.t_last)
        self.started = self.started | use
        return np.where(use, self.x_hat, x)
