"""Exception types for errors a user can cause, and the one-line forms of error messages.

The command line catches :class:`FCPoseError` and prints its message as one line on stderr with a
non-zero exit status (no traceback). Library users can catch the subclasses."""

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


def one_line(text: object, blank: str = "unknown error") -> str:
    """A message (usually an exception) on one line: every run of whitespace, line breaks included, becomes
    one space; ``blank`` when nothing is left."""
    return " ".join(str(text).split()) or blank


def worker_message(exc: BaseException, marker: str = "Original Traceback") -> str:
    """The message of an error, on one line. An error re-raised from a worker process (a DataLoader worker: its
    message holds ``marker``; a Ray worker: give ``marker=""``) carries the worker's traceback in its message; its
    last line is the original message, taken without its ``XError: `` prefix."""
    text = str(exc)
    if marker in text:
        last = ([line for line in text.strip().splitlines() if line.strip()] or [""])[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return one_line(text)


def first_line(exc: BaseException, limit: int = 300, skip: tuple[str, ...] = ()) -> str:
    """The first non-blank line of an exception's message, stripped and cut to ``limit`` characters, for
    errors whose message goes on for pages (compilers, runtimes). Lines starting with one of ``skip`` are
    passed over unless every line does; the exception's type name when the message is blank."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(skip)] or lines
    return useful[0][:limit] if useful else type(exc).__name__
