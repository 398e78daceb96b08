"""Official AdelaiDet checkpoint conversion, safe loading, the model zoo and ``fcpose convert``.

No test touches the network: downloads are served from local ``file://`` URLs or fail on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import urllib.error
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fcpose import CheckpointError, Predictor, build_model
from fcpose.cli import main
from fcpose.weights.checkpoint import load_model, read_checkpoint
from fcpose.weights.files import safe_load
from fcpose.weights.official import (
    AUX_PREFIXES,
    convert_official,
    fcpose_key_to_official,
    is_official_checkpoint,
    official_key_to_fcpose,
)
from fcpose.weights.zoo import MODEL_ZOO, cache_dir, fetch, resolve_weights, sha256_of

CKPT = "model_r50_fp16.pth"


def read_key_list(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, _kind = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(v) for v in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def fake_state_dict(rows, float_dtype=torch.float16) -> OrderedDict:
    """Zeros with the listed shapes (floats as ``float_dtype``); sizes_of_interest gets its real values."""
    sd = OrderedDict()
    for key, dims, dtype in rows:
        if key.endswith("sizes_of_interest"):
            sd[key] = torch.tensor([64, 128, 256, 512, 1333])
        elif dtype == "int64":
            sd[key] = torch.zeros(dims, dtype=torch.long)
        else:
            sd[key] = torch.zeros((), dtype=float_dtype).expand(dims)
    return sd


@pytest.fixture(scope="module")
def r50_rows(golden):
    return read_key_list(golden / "state_dict_keys_r50.txt")


@pytest.mark.parametrize("depth", [50, 101])
def test_key_lists_convert(golden, depth):
    rows = read_key_list(golden / f"state_dict_keys_r{depth}.txt")
    header = (golden / f"state_dict_keys_r{depth}.txt").read_text().splitlines()[0]
    assert f"{len(rows)} entries" in header
    # Inference only (keep_aux=False): the training-only auxiliary heads are dropped and listed.
    lean = convert_official({"model": fake_state_dict(rows), "__author__": "test"}, source="fake", keep_aux=False)
    aux = [k for k, _, _ in rows if k.startswith(AUX_PREFIXES)]
    assert sorted(lean["conversion"]["dropped"]) == sorted(aux) and len(aux) == 18
    assert lean["conversion"]["converted"] == len(rows) - len(aux) - 1  # sizes_of_interest goes into the config
    assert lean["config"]["model"]["keypoint"]["aux_heads"] is False
    assert lean["config"]["loss"]["recipe"] == "paper"
    # Default: everything kept, so that the official recipe can train on from the file.
    ckpt = convert_official({"model": fake_state_dict(rows), "__author__": "test"}, source="fake")
    report = ckpt["conversion"]
    assert report["preset"] == f"fcpose_r{depth}_official" and report["depth"] == depth
    assert report["dropped"] == [] and report["auxiliary_heads"] is True
    assert report["converted"] == len(rows) - 1
    assert report["upcast_to_float32"] == sum(1 for _, _, d in rows if d == "float32")
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    assert ckpt["config"]["model"]["keypoint"]["rel_coord_norm"] == [64.0, 128.0, 256.0, 512.0, 1333.0]
    assert ckpt["config"]["loss"]["recipe"] == "official"
    # Every element is accounted for: ours + sizes_of_interest = the official total (and without the heads).
    total = sum(math.prod(d) for _, d, _ in rows)
    dropped = sum(math.prod(d) for k, d, _ in rows if k.startswith(AUX_PREFIXES))
    assert sum(v.numel() for v in ckpt["model"].values()) == total - 5
    assert sum(v.numel() for v in lean["model"].values()) == total - dropped - 5
    # Names and shapes are those of the model its config describes (built on the meta device: no memory).
    from fcpose.weights.checkpoint import config_from_checkpoint

    with torch.device("meta"):
        own = build_model(config_from_checkpoint(ckpt)).state_dict()
    assert list(own) == list(ckpt["model"]) or sorted(own) == sorted(ckpt["model"])
    assert all(own[k].shape == v.shape and own[k].dtype == v.dtype for k, v in ckpt["model"].items())
    # Official names round-trip through the mapping.
    for key, _, _ in rows:
        name = official_key_to_fcpose(key)
        if name is not None:
            assert fcpose_key_to_official(name) == key


def test_missing_key_is_named(r50_rows):
    sd = fake_state_dict(r50_rows)
    del sd["backbone.bottom_up.res4.5.conv2.norm.running_var"]
    del sd["proposal_generator.basis_module.tower.4.bias"]
    with pytest.raises(CheckpointError) as info:
        convert_official(sd, source="x.pth")
    msg = str(info.value)
    assert "missing keys" in msg and "backbone.bottom_up.res4.5.conv2.norm.running_var" in msg
    assert "proposal_generator.basis_module.tower.4.bias" in msg and "\n" not in msg


def test_extra_key_is_named(r50_rows):
    sd = fake_state_dict(r50_rows)
    sd["proposal_generator.fcpose_head.new_layer.weight"] = torch.zeros(3)
    sd["backbone.bottom_up.res2.0.conv4.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        convert_official({"model": sd}, source="x.pth")
    msg = str(info.value)
    assert "unknown keys" in msg and "proposal_generator.fcpose_head.new_layer.weight" in msg
    assert "backbone.bottom_up.res2.0.conv4.weight" in msg


def test_wrong_shape_and_depth(r50_rows):
    sd = fake_state_dict(r50_rows)
    sd["proposal_generator.fcpose_head.atten_producer.weight"] = torch.zeros(2000, 2304)
    with pytest.raises(CheckpointError, match="atten_producer.weight"):
        convert_official(sd)
    sd = fake_state_dict(r50_rows)
    sd["proposal_generator.fcos.fcos_head.cls_logits.weight"] = torch.zeros(80, 256, 3, 3)
    with pytest.raises(CheckpointError, match=r"cls_logits.weight \(80, 256, 3, 3\)"):
        convert_official(sd)
    sd = fake_state_dict(r50_rows)
    sd["backbone.bottom_up.res4.9.conv1.weight"] = torch.zeros(256, 1024, 1, 1)
    with pytest.raises(CheckpointError, match="7 res4 blocks"):
        convert_official(sd)
    assert not is_official_checkpoint({"model": {"backbone.conv1.weight": torch.zeros(1)}})


def test_numpy_entries_and_bare_state_dict(r50_rows, tmp_path):
    sd = fake_state_dict(r50_rows)
    key = "proposal_generator.fcos.fcos_head.scales.2.scale"
    sd[key] = np.array([1.25], dtype=np.float64)
    path = tmp_path / "bare_legacy.pth"
    # A bare state dict (AdelaiDet's remove_optim_from_ckpt.py writes that), in the pre-1.6 file format.
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(path)
    assert ckpt["model"]["head.scales.2.scale"].dtype == torch.float32
    assert ckpt["model"]["head.scales.2.scale"].item() == 1.25


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"proposal_generator.fcpose_head.x": _Evil()}}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        safe_load(path)


def test_golden_checkpoint_converts_and_round_trips(golden, tmp_path, capsys):
    out = tmp_path / "r50.pt"
    assert main(["convert", str(golden / CKPT), str(out)]) == 0
    err = capsys.readouterr().err
    assert "fcpose_r50_official" in err and "388 of 389" in err and "kept the training-only auxiliary heads" in err
    converted = torch.load(out, map_location="cpu", weights_only=True)
    raw = torch.load(golden / CKPT, map_location="cpu", weights_only=True)["model"]
    halves = sum(1 for v in raw.values() if v.dtype == torch.float16)
    assert converted["format"] == "fcpose" and converted["conversion"]["upcast_to_float32"] == halves == 376
    a = load_model(out).state_dict()
    b = load_model(golden / CKPT).state_dict()  # converted on the fly
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    w = raw["proposal_generator.fcpose_head.atten_producer.weight"].float()
    assert torch.equal(a["head.controller.weight"].reshape(2737, -1), w)
    assert main(["convert", str(out), str(tmp_path / "again.pt")]) == 2
    assert "already an fcpose checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Model zoo
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FCPOSE_CACHE", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr("fcpose.weights.zoo.urllib.request.urlopen", no_network)


def test_zoo_entries():
    assert MODEL_ZOO["fcpose_r50_official"].url == "https://huggingface.co/ZjuCv/AdelaiDet/resolve/main/fcpose50.pth"
    assert MODEL_ZOO["fcpose_r101_official"].url == "https://huggingface.co/ZjuCv/AdelaiDet/resolve/main/fcpose101.pth"
    assert {e.preset for e in MODEL_ZOO.values() if e.url} == {"fcpose_r50_official", "fcpose_r101_official"}
    assert MODEL_ZOO["fcpose_synth_demo"].url is None  # bundled in the package: nothing to download


def test_zoo_uses_a_preplaced_file(golden, cache, offline, monkeypatch):
    cache.mkdir()
    (cache / "fcpose50.pth").symlink_to(golden / CKPT)
    # The real entry's size and hash are those of the released file; the stand-in gets its own.
    real = MODEL_ZOO["fcpose_r50_official"]
    monkeypatch.setitem(MODEL_ZOO, "fcpose_r50_official", dataclasses.replace(
        real, size=(golden / CKPT).stat().st_size, sha256=sha256_of(golden / CKPT)))
    assert resolve_weights("fcpose_r50_official") == cache / "fcpose50.pth"
    assert (cache / ".fcpose50.pth.verified").is_file()  # hashed once, remembered
    predictor = Predictor.from_checkpoint("fcpose_r50_official")
    assert predictor.cfg.name == "fcpose_r50_official" and predictor.cfg.model.keypoint.branch == "official"
    # With the real record, the stand-in fails the size check, in one line, and stays where it is.
    monkeypatch.setitem(MODEL_ZOO, "fcpose_r50_official", real)
    with pytest.raises(CheckpointError) as info:
        fetch("fcpose_r50_official", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "330,645,960 bytes" in msg and "delete it" in msg
    assert (cache / "fcpose50.pth").exists()


def test_zoo_offline_fails_with_one_line(cache, offline, tmp_path, capsys):
    with pytest.raises(CheckpointError) as info:
        fetch("fcpose_r101_official", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and str(cache / "fcpose101.pth") in msg and "network disabled" in msg
    assert not cache.exists() or not any(cache.iterdir())  # no partial file left behind
    image = tmp_path / "x.jpg"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", str(image), "--weights", "fcpose_r101_official", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcpose predict: error: cannot download fcpose_r101_official")
    assert str(cache / "fcpose101.pth") in err[0]


def test_released_files_are_recorded():
    r50, r101 = MODEL_ZOO["fcpose_r50_official"], MODEL_ZOO["fcpose_r101_official"]
    assert (r50.size, r50.sha256) == (330_645_960, "b9dfd9758e499e0d64561bc2c9b4fdcdea5402d8f62429412088e818f6badc5a")
    assert (r101.size, r101.sha256) == (482_703_626,
                                        "97f5ca289e2400da07564c3d5dfc289071628f9f7c23953238556dfdb4547802")


def _served_entry(monkeypatch, url: str, payload: bytes, **changes) -> None:
    entry = dataclasses.replace(MODEL_ZOO["fcpose_r50_official"], url=url, size=len(payload),
                                sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(MODEL_ZOO, "fcpose_r50_official", dataclasses.replace(entry, **changes))


def test_zoo_download_checks_and_renames(cache, tmp_path, monkeypatch, capsys):
    # The real urlopen, serving a local file:// URL.
    payload = tmp_path / "served.bin"
    payload.write_bytes(b"fcpose" * 1000)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    _served_entry(monkeypatch, payload.as_uri(), payload.read_bytes(), size=None, sha256=None)
    path = fetch("fcpose_r50_official", progress=False)
    assert path == cache_dir() / "fcpose50.pth" and path.read_bytes() == payload.read_bytes()
    assert digest in capsys.readouterr().err  # nothing recorded: the hash is printed to compare by hand
    assert sorted(p.name for p in cache.iterdir()) == ["fcpose50.pth"]
    # A known, wrong hash: the download is deleted.
    path.unlink()
    _served_entry(monkeypatch, payload.as_uri(), payload.read_bytes(), sha256="0" * 64)
    with pytest.raises(CheckpointError, match="expected 0000"):
        fetch("fcpose_r50_official", progress=False)
    assert not any(cache.iterdir())


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server (127.0.0.1, a free port) serving tmp_path/www; yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_zoo_http_download_is_verified(cache, http_server, monkeypatch, capsys):
    root, base = http_server
    payload = os.urandom(3000) + b"fcpose"
    (root / "fcpose50.pth").write_bytes(payload)
    url = base + "fcpose50.pth"
    # Good size and hash: accepted, verification remembered next to the file.
    _served_entry(monkeypatch, url, payload)
    path = fetch("fcpose_r50_official", progress=False)
    assert path.read_bytes() == payload and "verified" in capsys.readouterr().err
    assert sorted(p.name for p in cache.iterdir()) == [".fcpose50.pth.verified", "fcpose50.pth"]
    # Later uses check the size but do not hash the file again ...
    with monkeypatch.context() as m:
        m.setattr("fcpose.weights.zoo.sha256_of", lambda *a, **k: pytest.fail("hashed a verified file again"))
        assert fetch("fcpose_r50_official", progress=False) == path
    # ... until it changes (same size, other bytes, newer time): then the hash is checked and fails.
    path.write_bytes(bytes(len(payload)))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(CheckpointError) as info:
        fetch("fcpose_r50_official", progress=False)
    assert "\n" not in str(info.value) and "delete it to download it again" in str(info.value)
    # A truncated cached file fails the size check.
    path.write_bytes(payload[:100])
    with pytest.raises(CheckpointError, match="is 100 bytes, but fcpose_r50_official is 3,006 bytes"):
        fetch("fcpose_r50_official", progress=False)
    for p in cache.iterdir():
        p.unlink()
    # Bad hash of the download: rejected and deleted.
    _served_entry(monkeypatch, url, payload, sha256="f" * 64)
    with pytest.raises(CheckpointError) as info:
        fetch("fcpose_r50_official", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and hashlib.sha256(payload).hexdigest() in msg and "was deleted" in msg
    assert not any(cache.iterdir())
    # Wrong size of the download: rejected and deleted.
    _served_entry(monkeypatch, url, payload, size=len(payload) + 1)
    with pytest.raises(CheckpointError, match="is 3,006 bytes, expected 3,007; the file was deleted"):
        fetch("fcpose_r50_official", progress=False)
    assert not any(cache.iterdir())
    # Through the command line: one error line (after the download's own messages), exit status 2.
    _served_entry(monkeypatch, url, payload, sha256="f" * 64)
    assert main(["convert", "fcpose_r50_official", str(cache / "out.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1 and errors[0] == err[-1] and "Traceback" not in "".join(err)
    assert err[-1].startswith("fcpose convert: error: the download of fcpose_r50_official has SHA-256")
    assert not any(cache.iterdir())


# ----------------------------------------------------------------------------------------------
# A detectron2 *training* checkpoint (what the released files are; TRAIN_NOTES.md "Part C")
# ----------------------------------------------------------------------------------------------
def _read_kinds(path: Path) -> dict[str, str]:
    return {line.split("\t")[0]: line.split("\t")[3] for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def detectron2_training_checkpoint(rows, kinds: dict[str, str]) -> dict:
    """The top-level structure AdelaiDet's ``AdetCheckpointer`` writes during training (see TRAIN_NOTES.md
    Part C): exactly ``model`` (an OrderedDict state dict with ``_metadata``, float32 + int64), ``optimizer``
    (SGD state: one momentum buffer per trainable parameter, 2 param groups), ``scheduler`` and
    ``iteration``. Every tensor is a stride-0 view of one value, so the file stays a few hundred KB; each
    entry has its own value, so the test can see that every tensor lands in the right place."""
    model = OrderedDict()
    for i, (key, dims, dtype) in enumerate(rows):
        if key.endswith("sizes_of_interest"):
            model[key] = torch.tensor([64, 128, 256, 512, 1333])
        elif dtype == "int64":
            model[key] = torch.zeros((), dtype=torch.long).expand(dims)
        else:
            model[key] = torch.tensor(1.0 + i / 1000.0).expand(dims)
    prefixes = sorted({k.rsplit(".", 1)[0] for k in model} | {""})
    model._metadata = OrderedDict((p, {"version": 1}) for p in prefixes)
    # Trainable: every parameter except the frozen stem/res2 (freeze_at 2) and the int64 sizes_of_interest;
    # norm parameters (1-d weight/bias of a module whose weight is 1-d) form the second group (no decay).
    trainable = [k for k, _, d in rows if kinds[k] == "param" and d == "float32"
                 and not k.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.res2."))]
    shapes = {k: dims for k, dims, _ in rows}

    def is_norm(key: str) -> bool:
        owner, leaf = key.rsplit(".", 1)
        return leaf in ("weight", "bias") and len(shapes.get(f"{owner}.weight", (0, 0))) == 1

    decay = [k for k in trainable if not is_norm(k)]
    no_decay = [k for k in trainable if is_norm(k)]
    order = decay + no_decay
    group = dict(lr=0.004, momentum=0.9, dampening=0, nesterov=False, maximize=False, foreach=True,
                 differentiable=False, fused=None, initial_lr=0.004)
    optimizer = {"state": {i: {"momentum_buffer": torch.tensor(-0.5).expand(shapes[k])} for i, k in enumerate(order)},
                 "param_groups": [{**group, "weight_decay": 0.0001, "params": list(range(len(decay)))},
                                  {**group, "weight_decay": 0.0, "params": list(range(len(decay), len(order)))}]}
    return {"model": model, "optimizer": optimizer, "scheduler": {"base_lrs": [0.004, 0.004], "last_epoch": 1},
            "iteration": 0}


def test_detectron2_training_checkpoint_loads_and_converts(golden, r50_rows, tmp_path, capsys):
    kinds = _read_kinds(golden / "state_dict_keys_r50.txt")
    obj = detectron2_training_checkpoint(r50_rows, kinds)
    groups = obj["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in groups] == [104, 34]  # as in the real file (TRAIN_NOTES.md Part C)
    path = tmp_path / "model_0000000.pth"
    torch.save(obj, path)
    assert path.stat().st_size < 2_000_000
    # The project's loader (weights_only=True) reads the whole structure back.
    loaded = safe_load(path)
    assert sorted(loaded) == ["iteration", "model", "optimizer", "scheduler"]
    assert type(loaded["model"]) is OrderedDict and len(loaded["model"]) == 389
    assert loaded["model"]._metadata[""] == {"version": 1}
    assert loaded["optimizer"]["param_groups"][1]["fused"] is None and len(loaded["optimizer"]["state"]) == 138
    assert loaded["scheduler"] == {"base_lrs": [0.004, 0.004], "last_epoch": 1} and loaded["iteration"] == 0
    # Every path that takes a .pth: fcpose convert, read_checkpoint/load_model, Predictor.from_checkpoint.
    out = tmp_path / "converted.pt"
    assert main(["convert", str(path), str(out)]) == 0
    assert "388 of 389 entries converted" in capsys.readouterr().err
    model = load_model(path)
    state = model.state_dict()
    for i, (key, _, dtype) in enumerate(r50_rows):
        name = official_key_to_fcpose(key)
        if dtype == "float32" and name is not None and not key.startswith(AUX_PREFIXES):
            assert torch.all(state[name] == torch.tensor(1.0 + i / 1000.0)), key
    converted = load_model(out).state_dict()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    predictor = Predictor.from_checkpoint(path)
    assert predictor.cfg.name == "fcpose_r50_official"
