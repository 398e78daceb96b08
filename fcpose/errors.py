"""Exception types for errors a user can cause.

The command line catches :class:`FCPoseError` and prints its message as one line on stderr with a
non-zero exit status (no traceback). Library users can catch the subclasses.
"""

from __future__ import annotations


class FCPoseError(Exception):
    """Base class for every error caused by user input (paths, files, configs)."""


class ConfigError(FCPoseError):
    """Unknown preset, unknown config key, a value of the wrong type, or a device this machine lacks."""


class CheckpointError(FCPoseError):
    """Missing, corrupt, unsafe or incompatible checkpoint file."""


class InputError(FCPoseError):
    """Missing, unreadable or unsupported image/video/dataset input."""


class OutputError(FCPoseError):
    """An output file or folder that cannot be written (a file in the way, no permission, disk full)."""
