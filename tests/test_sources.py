"""Tests for fcpose.inference.sources: image decoding, input expansion, video reading/writing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import COCO_TINY, DEMO_VIDEO  # FCPOSE_SHARED or ../shared
from PIL import Image

from fcpose.data.images import IMAGE_EXTENSIONS, read_image
from fcpose.data.video import VIDEO_EXTENSIONS, VideoReader, VideoWriter
from fcpose.errors import InputError
from fcpose.inference.sources import Source, collect_sources


def _coco_jpeg() -> Path:
    files = sorted(COCO_TINY.glob("*.jpg")) if COCO_TINY.is_dir() else []
    if not files:
        pytest.skip(f"real test images not available ({COCO_TINY} absent)")
    return files[0]


def _demo_video() -> Path:
    if not DEMO_VIDEO.is_file():
        pytest.skip(f"real test video not available ({DEMO_VIDEO} absent)")
    return DEMO_VIDEO


def _gradient_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 128)], axis=2)
    return rgb.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# read_image
# --------------------------------------------------------------------------------------------
def test_read_real_jpeg_is_rgb():
    path = _coco_jpeg()
    img = read_image(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape == bgr.shape
    diff_rgb = np.abs(img.astype(np.int16) - bgr[:, :, ::-1].astype(np.int16)).mean()
    diff_bgr = np.abs(img.astype(np.int16) - bgr.astype(np.int16)).mean()
    assert diff_rgb < 2.0
    assert diff_bgr > diff_rgb + 2.0  # the channel order really matters for this image


def test_read_png_exact_rgb(tmp_path):
    rgb = _gradient_rgb()
    Image.fromarray(rgb).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), rgb)


def test_exif_orientation_applied(tmp_path):
    h, w = 20, 40
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = (255, 0, 0)  # left half red, right half blue (as stored)
    rgb[:, w // 2 :] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.shape == (w, h, 3)
    # After a clockwise rotation the stored left (red) half is on top.
    top, bottom = img[: w // 2 - 3].reshape(-1, 3).mean(0), img[w // 2 + 3 :].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_grayscale_png_becomes_rgb(tmp_path):
    gray = _gradient_rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    img = read_image(tmp_path / "gray.png")
    assert img.shape == gray.shape + (3,) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)


def test_rgba_png_becomes_rgb(tmp_path):
    rgb = _gradient_rgb()
    alpha = np.full(rgb.shape[:2] + (1,), 100, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.shape == rgb.shape
    np.testing.assert_array_equal(img, rgb)


def test_palette_png_becomes_rgb(tmp_path):
    rgb = _gradient_rgb()
    Image.fromarray(rgb).quantize(16).save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    assert img.shape == rgb.shape and img.dtype == np.uint8
    assert np.abs(img.astype(int) - rgb.astype(int)).mean() < 20


def test_16bit_png_is_rescaled(tmp_path):
    gray16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    expected = (gray16.astype(np.int64) // 257).astype(np.uint8)
    np.testing.assert_array_equal(img[:, :, 1], expected)
    assert img.max() > 240  # rescaled, not clipped at 255 or truncated to the low byte


def test_missing_file_raises(tmp_path):
    with pytest.raises(InputError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


def test_directory_raises(tmp_path):
    d = tmp_path / "folder.jpg"
    d.mkdir()
    with pytest.raises(InputError, match="folder.jpg"):
        read_image(d)


def test_corrupt_bytes_raise(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="garbage.jpg") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png"):
        read_image(path)


def test_truncated_real_jpeg_raises(tmp_path):
    data = _coco_jpeg().read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.jpg"):
        read_image(path)


def test_truncated_png_raises(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png"):
        read_image(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_raises(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(_gradient_rgb()).save(path)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="secret.png"):
            read_image(path)
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------------------------
# collect_sources
# --------------------------------------------------------------------------------------------
def test_extension_sets():
    assert {".jpg", ".png", ".webp", ".tiff"} <= IMAGE_EXTENSIONS
    assert {".mp4", ".avi", ".mkv"} <= VIDEO_EXTENSIONS
    assert not IMAGE_EXTENSIONS & VIDEO_EXTENSIONS


def _make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(_gradient_rgb()).save(folder / "b.png")
    Image.fromarray(_gradient_rgb()).save(folder / "a.JPG")
    (folder / "clip.mp4").write_bytes(b"\x00" * 16)  # kind is decided by extension only
    (folder / "notes.txt").write_text("hello")
    Image.fromarray(_gradient_rgb()).save(folder / ".hidden.png")
    (folder / "sub").mkdir()
    Image.fromarray(_gradient_rgb()).save(folder / "sub" / "deep.png")  # not recursive
    return folder


def test_collect_folder(tmp_path):
    folder = _make_folder(tmp_path)
    sources, problems = collect_sources([folder])
    assert problems == []
    assert [s.path.name for s in sources] == ["a.JPG", "b.png", "clip.mp4"]
    assert [s.kind for s in sources] == ["image", "image", "video"]
    assert all(isinstance(s, Source) and s.path.parent == folder for s in sources)


def test_collect_files_duplicates_and_problems(tmp_path):
    folder = _make_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    inputs = [
        folder / "b.png",
        str(folder),  # b.png again: kept once, at its first position
        folder / "notes.txt",  # explicit unsupported file
        tmp_path / "missing.jpg",
        tmp_path / "empty",
        folder / ".." / "inputs" / "clip.mp4",  # same file through another spelling
    ]
    sources, problems = collect_sources(inputs)
    assert [s.path.name for s in sources] == ["b.png", "a.JPG", "clip.mp4"]
    assert len(problems) == 3
    assert all("\n" not in p for p in problems)
    assert any("notes.txt" in p and "unsupported" in p for p in problems)
    assert any("missing.jpg" in p and "not found" in p for p in problems)
    assert any("empty" in p and "no image or video" in p for p in problems)


def test_collect_explicit_hidden_file_is_used(tmp_path):
    folder = _make_folder(tmp_path)
    sources, problems = collect_sources([folder / ".hidden.png"])
    assert problems == [] and [s.path.name for s in sources] == [".hidden.png"]


# --------------------------------------------------------------------------------------------
# VideoReader / VideoWriter
# --------------------------------------------------------------------------------------------
def test_video_reader_demo():
    with VideoReader(_demo_video()) as reader:
        assert reader.fps > 0
        assert reader.width > 0 and reader.height > 0
        n = 0
        for frame in reader:
            assert frame.shape == (reader.height, reader.width, 3)
            assert frame.dtype == np.uint8
            n += 1
        assert n > 0
        if reader.frame_count:
            assert abs(reader.frame_count - n) <= 1
        # A second pass restarts from the first frame.
        assert sum(1 for _ in reader) == n


def test_video_reader_is_rgb(tmp_path):
    path = tmp_path / "red.avi"
    with VideoWriter(path, fps=10, width=32, height=32) as writer:
        for _ in range(3):
            writer.write(np.tile(np.array([220, 20, 20], np.uint8), (32, 32, 1)))
    with VideoReader(path) as reader:
        frame = next(iter(reader))
    mean = frame.reshape(-1, 3).mean(0)
    assert mean[0] > 180 and mean[2] < 60


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_writer_round_trip(tmp_path, suffix):
    path = tmp_path / "out" / f"clip{suffix}"  # parent folder is created
    h, w, n = 48, 64, 7
    base = _gradient_rgb(h, w)
    with VideoWriter(path, fps=12.0, width=w, height=h) as writer:
        for i in range(n):
            writer.write(np.roll(base, i * 4, axis=1))
        assert writer.frames_written == n
    assert path.is_file() and path.stat().st_size > 0
    with VideoReader(path) as reader:
        assert (reader.width, reader.height) == (w, h)
        assert reader.fps == pytest.approx(12.0, rel=0.01)
        frames = list(reader)
    assert len(frames) == n
    assert reader.frame_count == n
    assert all(f.shape == (h, w, 3) for f in frames)
    err = np.abs(frames[3].astype(int) - np.roll(base, 12, axis=1).astype(int)).mean()
    assert err < 12


def test_video_writer_odd_size_is_padded(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=10, width=63, height=47) as writer:
        assert writer.frame_size == (64, 48)
        for _ in range(2):
            writer.write(np.zeros((47, 63, 3), np.uint8))
    with VideoReader(path) as reader:
        assert (reader.width, reader.height) == (64, 48)


def test_video_writer_rejects_bad_frames_and_suffix(tmp_path):
    with pytest.raises(InputError, match="clip.gif"):
        VideoWriter(tmp_path / "clip.gif", fps=10, width=32, height=32)
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "clip.mp4", fps=0, width=32, height=32)
    with VideoWriter(tmp_path / "clip.mp4", fps=10, width=32, height=32) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((16, 32, 3), np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((32, 32, 3), np.float32))


def test_video_writer_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="clip.mp4"):
        VideoWriter(blocker / "clip.mp4", fps=10, width=32, height=32)  # parent is a file


def test_video_reader_rejects_non_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("definitely not a video\n" * 100)
    with pytest.raises(InputError, match="notes.mp4"):
        VideoReader(path)
    with pytest.raises(InputError, match="absent.mp4"):
        VideoReader(tmp_path / "absent.mp4")


def _codec_of(path):
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def test_video_writer_prefers_h264(tmp_path):
    pytest.importorskip("av", reason="PyAV (the video extra) is not installed")
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=10, width=32, height=24) as writer:
        for _ in range(3):
            writer.write(np.zeros((24, 32, 3), np.uint8))
    assert writer.path == path and writer.codec == "libx264" and "H.264" in writer.codec_note
    assert _codec_of(path) == "h264"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # the temporary file was renamed


def test_video_writer_without_h264_writes_a_browser_format(tmp_path, monkeypatch):
    from fcpose.data import video

    monkeypatch.setattr(video, "_have_pyav_encoder", lambda name: False)  # as if PyAV were not installed
    with VideoWriter(tmp_path / "clip.mp4", fps=10, width=32, height=24) as writer:
        for _ in range(3):
            writer.write(np.zeros((24, 32, 3), np.uint8))
    # OpenCV's own H.264 if its FFmpeg has one, else VP9 in WebM; mp4v only if neither exists
    assert (writer.codec, writer.path.suffix) in {("avc1", ".mp4"), ("VP90", ".webm"), ("mp4v", ".mp4")}
    if writer.codec == "mp4v":
        assert "cannot play" in writer.codec_note
    with VideoReader(writer.path) as reader:
        assert sum(1 for _ in reader) == 3
    assert [p.name for p in tmp_path.iterdir()] == [writer.path.name]


def test_interrupted_video_leaves_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "clip.mp4", fps=10, width=32, height=24) as writer:
            writer.write(np.zeros((24, 32, 3), np.uint8))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
