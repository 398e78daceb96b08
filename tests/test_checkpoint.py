import pickle
from pathlib import Path

import pytest
import torch

import fcpose
from fcpose.errors import CheckpointError
from fcpose.weights.checkpoint import load_model, read_checkpoint, save_checkpoint


def test_round_trip_rebuilds_the_same_model(tiny_model, tmp_path: Path):
    path = save_checkpoint(tiny_model, tmp_path / "sub" / "m.pt", step=7, metrics={"AP": 0.5})
    ckpt = read_checkpoint(path)
    assert ckpt["format"] == "fcpose" and ckpt["step"] == 7 and ckpt["metrics"] == {"AP": 0.5}
    assert ckpt["config"]["name"] == "fcpose_r18_tiny"
    model = load_model(path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = tiny_model(x), model(x)
    torch.testing.assert_close(a.kpt_offsets, b.kpt_offsets)
    torch.testing.assert_close(a.cls_logits[2], b.cls_logits[2])
    # Plain torch.load with weights_only=True reads it: no pickled code inside.
    torch.load(path, weights_only=True)
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporary behind


def test_missing_corrupt_and_foreign_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="folder"):
        read_checkpoint(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an fcpose checkpoint"):
        read_checkpoint(foreign)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fcpose", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(evil)
    assert "pwned" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)
    assert "pwned" not in capsys.readouterr().out


def test_wrong_weights_or_config_are_clear_errors(tiny_model, tmp_path: Path):
    path = save_checkpoint(tiny_model, tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["head.controller.weight"]
    ckpt["model"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: head\.controller\.weight.*unexpected keys: extra"):
        load_model(tmp_path / "keys.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["fpn"]["channels"] = 32
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(tmp_path / "shape.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["bogus"] = 1
    torch.save(ckpt, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="bogus"):
        load_model(tmp_path / "cfg.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        read_checkpoint(tmp_path / "new.pt")


def test_public_api_names(tiny_checkpoint):
    predictor = fcpose.Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    image = torch.randint(0, 256, (120, 90, 3), dtype=torch.uint8).numpy()
    dets = predictor(image)
    assert isinstance(dets, fcpose.PoseDetections)
    assert dets.boxes.shape[1] == 4 and dets.keypoints.shape[1:] == (17, 3) and dets.scores.ndim == 1
    with pytest.raises(fcpose.FCPoseError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise fcpose.FCPoseError("CUDA is not available (skipped: a GPU is present)")
        fcpose.Predictor.from_checkpoint(tiny_checkpoint, device="cuda")


def test_half_precision_checkpoint(tiny_model, tmp_path: Path):
    full = save_checkpoint(tiny_model, tmp_path / "full.pt")
    half = save_checkpoint(tiny_model, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    stored = torch.load(half, weights_only=True)["model"]
    assert stored["head.controller.weight"].dtype == torch.float16
    model = load_model(half)
    assert model.head.controller.weight.dtype == torch.float32
    torch.testing.assert_close(model.head.controller.weight, tiny_model.head.controller.weight, rtol=1e-3, atol=1e-4)
