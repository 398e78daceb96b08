"""Atomic writes: permissions follow the umask, and unwritable targets give one-line OutputErrors."""

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from fcpose import fileio
from fcpose.errors import OutputError
from fcpose.fileio import atomic_save, atomic_write_text, current_umask, prepare_output_dir


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_respect_the_umask(mask, umask, tmp_path):
    umask(mask)
    assert current_umask() == mask
    text = atomic_write_text(tmp_path / "a.json", "{}")
    ckpt = atomic_save({"x": torch.zeros(2)}, tmp_path / "sub" / "m.pt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what any other new file of the user gets
    assert _mode(text) == _mode(ckpt) == _mode(plain) == 0o666 & ~mask
    # overwriting keeps going through a fresh temporary file: same mode again
    atomic_write_text(tmp_path / "a.json", "[]")
    assert _mode(tmp_path / "a.json") == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "plain.txt", "sub"]  # no temporaries left


def test_predict_outputs_respect_the_umask(umask, tiny_checkpoint, tmp_path):
    from PIL import Image

    from fcpose.cli import main

    umask(0o002)
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--weights", str(tiny_checkpoint), "--out", str(out), "--no-progress"]) == 0
    for name in ("predictions.json", "x.jpg"):
        assert _mode(out / name) == 0o664, name


def test_output_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        prepare_output_dir(blocker)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        atomic_write_text(blocker / "predictions.json", "[]")
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write_text(tmp_path, "[]")
    assert blocker.read_text() == "x"


def test_output_folder_that_cannot_be_created():
    with pytest.raises(OutputError, match="cannot create"):
        prepare_output_dir("/proc/fcpose-test/out")  # /proc refuses new folders, even to root


def test_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "predictions.json"
    target.write_text('["old"]')

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError) as info:
        atomic_write_text(target, "[1, 2, 3]", what="predictions")
    monkeypatch.undo()
    assert str(info.value) == f"cannot write predictions {target}: No space left on device"
    assert json.loads(target.read_text()) == ["old"]  # the previous complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]


def test_torch_write_error_becomes_output_error(tmp_path, monkeypatch):
    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:642] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(fileio.torch, "save", failing_save)
    with pytest.raises(OutputError, match=r"^cannot write checkpoint .*m\.pt: .*file write failed$"):
        atomic_save({"x": 1}, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_save({"step": 1}, target)

    def interrupted(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_output_dir_removes_only_the_empty_folders_it_created(tmp_path):
    existing = tmp_path / "runs"
    existing.mkdir()
    with pytest.raises(RuntimeError), fileio.output_dir(existing / "a" / "b") as out:
        assert out.is_dir()
        raise RuntimeError("the command failed")
    assert existing.is_dir() and list(existing.iterdir()) == []  # a/b and a were made here: gone; runs stays
    with pytest.raises(KeyboardInterrupt), fileio.output_dir(existing / "c") as out:
        (out / "predictions.json").write_text("[]")  # something was written: the folder stays
        raise KeyboardInterrupt
    assert (existing / "c" / "predictions.json").is_file()
    with pytest.raises(RuntimeError), fileio.output_dir(existing) as out:
        raise RuntimeError("an existing folder is never removed")
    assert existing.is_dir()
    with fileio.output_dir(tmp_path / "ok") as out:  # success: the folder stays, even empty
        pass
    assert out.is_dir()


def test_failed_atomic_write_leaves_no_folder_it_created(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write_text(tmp_path / "new" / "deeper" / "metrics.json", "{}")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_check_output_dir_tries_to_write(tmp_path):
    """The early check leaves nothing behind and catches a folder that refuses new entries even where
    os.access would let it pass (root); /proc/<pid> refuses them to everyone."""
    assert fileio.check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert fileio.check_output_dir(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match=f"output folder /proc/{os.getpid()} is not writable"):
        fileio.check_output_dir(f"/proc/{os.getpid()}")
    with pytest.raises(OutputError, match="cannot create output folder /proc/fcpose-test/out: /proc is not writable"):
        fileio.check_output_dir("/proc/fcpose-test/out")
