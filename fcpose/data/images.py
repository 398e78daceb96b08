"""Reading images: files (and arrays) in, ``uint8`` ``H x W x 3`` **RGB** arrays out.

The bottom of every image path: training data (:mod:`fcpose.data.coco`), dataset prediction, the
:class:`~fcpose.inference.predictor.Predictor` and the command-line sources (:mod:`fcpose.inference.sources`)
all read images here. Problems a user can cause — a missing, unreadable, corrupt or unsupported file, an
array of the wrong shape — raise :class:`~fcpose.errors.InputError` with a one-line message."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError, one_line

__all__ = ["IMAGE_EXTENSIONS", "ImageFormatError", "ImageTooLargeError", "as_rgb_array", "check_file", "decode_image",
           "pil_to_rgb", "read_image", "read_image_size"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a directory, not a file: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a regular file: {path}")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> ``uint8`` ``H x W x 3`` RGB (16-bit and float data are rescaled, alpha dropped)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit PNG/TIFF (PIL's "I;16*" modes, or "I" from older plugins): keep the top 8 bits.
        arr = np.asarray(img).astype(np.int64)
        if mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            gray = arr.astype(np.uint8)
        else:
            gray = (np.clip(arr, 0, 65535) // 257).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


class ImageTooLargeError(InputError):
    """An image with more pixels than allowed (a decompression bomb: a small file that decodes to a huge array)."""


class ImageFormatError(InputError):
    """An image in a format that is not accepted here (e.g. a GIF where only JPEG, PNG and WebP are)."""


@contextlib.contextmanager
def _pil_errors(name: str):
    """PIL's exceptions while reading image ``name`` -> one-line :class:`InputError` (ours pass through)."""
    try:
        yield
    except (InputError, MemoryError):
        raise
    except PermissionError:
        raise InputError(f"cannot read image {name}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"cannot read image {name}: not an image file or an unsupported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"cannot read image {name}: {one_line(exc)}") from None
    except Exception as exc:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise InputError(f"cannot read image {name}: corrupt or truncated ({one_line(exc)})") from None


def _decode(source, name: str, *, formats: set[str] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``source`` (a path or a binary file object) with PIL -> ``uint8 [H, W, 3]`` RGB, upright.

    The header is read first: the format (``formats``: PIL format names such as ``{"JPEG", "PNG", "WEBP"}``,
    None: any) and the pixel count (``max_pixels``, None: PIL's own limit) are checked before the pixels are
    decoded, so a decompression bomb costs no memory. ``name`` is how the messages refer to the image."""
    with _pil_errors(name), Image.open(source) as img:
        if formats is not None and img.format not in formats:
            raise ImageFormatError(f"cannot read image {name}: {img.format or 'this'} images are not accepted "
                                   f"(accepted: {', '.join(sorted(formats))})")
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(f"image {name} is {width}x{height} = {width * height:,} pixels, more than "
                                     f"the limit of {max_pixels:,}")
        img.load()  # force a full decode: truncated data fails here, not later
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # a malformed EXIF block does not make the pixels unusable
            upright = img
        arr = pil_to_rgb(upright)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image has zero size: {name}")
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file with PIL -> a new ``uint8 [H, W, 3]`` RGB array, EXIF orientation applied (``H x W``
    is the upright size a viewer shows); palette, grayscale, RGBA (alpha dropped), CMYK and 16-bit images become
    8-bit RGB. :class:`InputError` naming the file if it is missing, a directory, unreadable, not an image,
    corrupt or truncated, or has zero size."""
    path = Path(path)
    check_file(path, "image")
    return _decode(path, str(path))


def read_image_size(path: str | Path) -> tuple[int, int]:
    """The upright ``(height, width)`` of an image file (what :func:`read_image` returns) from its header alone,
    without decoding the pixels: fast enough to check every image of a dataset. Same one-line errors as
    :func:`read_image` for a missing, unreadable or unsupported file."""
    path = Path(path)
    check_file(path, "image")
    with _pil_errors(str(path)), Image.open(path) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation: 5-8 turn the image by 90 degrees
        except Exception:  # a malformed EXIF block: read_image keeps the pixels as they are, so do we
            orientation = 1
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def decode_image(data: bytes, name: str = "upload", *, formats: set[str] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode an encoded image held in memory (e.g. an HTTP upload) -> ``uint8 [H, W, 3]`` RGB, upright, as
    :func:`read_image` does for a file, without touching the file system. ``formats`` restricts the accepted PIL formats
    (by content, not name; else :class:`ImageFormatError`); ``max_pixels`` bounds width x height, checked on the header
    before decoding (else :class:`ImageTooLargeError`). :class:`InputError`: empty, not an image, corrupt or truncated.
    """
    if not data:
        raise InputError(f"image {name} is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, formats=formats, max_pixels=max_pixels)


def as_rgb_array(image) -> np.ndarray:
    """An image given as a path (read with :func:`read_image`) or as an RGB ``uint8 [H, W, 3]`` array
    (returned as is) -> the array; anything else is an :class:`InputError`."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"expected an RGB uint8 image of shape [H, W, 3], got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError("the image is empty (zero height or width)")
    return arr
