"""The noise floor under the golden parity tolerances, and how far a real mistake moves the same numbers.

Ours in float64 and in fp32 under each instruction-set setting (``SETTINGS``), three deliberate ``MISTAKES``
and the exports against PyTorch, each in a fresh process, measured as the parity tests measure; each group
reports its largest value and where. docs/parity.md says what is compared and how the tolerances follow.

    python benchmarks/parity_noise.py            # about 15 minutes on 2 cores; needs ../shared
    python benchmarks/parity_noise.py --smoke    # the intermediates only, one setting, onnxruntime (the tests')

Writes ``benchmarks/results/parity_noise.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

from fcpose.bench.people import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the parity tests' own helpers: one implementation of each comparison
import test_official_parity as p  # noqa: E402
import test_official_training as t  # noqa: E402
from conftest import COCO_TINY, GOLDEN, GOLDEN_TRAIN, make_lively  # noqa: E402

GOLDEN_TRAIN_FILE = GOLDEN_TRAIN / "train_golden_r50.pt"

SETTINGS = {  # instruction-set settings: the environment of each fp32 run
    "as_is": {},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
MISTAKES = ("loss_direction_dropped", "keypoint_target_one_cell_off", "grid_one_pixel_off")


def float64_criterion():
    """The criterion casts network outputs to fp32 (``.float()``, for autocast); keep float64 as it is."""
    original = torch.Tensor.float
    return mock.patch.object(torch.Tensor, "float", lambda self, *a, **k: self if self.dtype == torch.float64
                             else original(self, *a, **k))


def make_mistake(mistake: str) -> None:
    import fcpose.loss as loss_module
    from fcpose.targets import locations

    call = loss_module.FCPoseCriterion.__call__

    def dropped(self, *args, **kwargs):
        losses = call(self, *args, **kwargs)
        return {k: v * 0.0 if k == "loss_direction" else v for k, v in losses.items()}

    def shifted(self, model, dense, targets, *args, **kwargs):  # every labelled keypoint 2 px right: a stride-2 cell
        moved = [{**t, "keypoints": t["keypoints"] + torch.tensor([2.0, 0.0, 0.0])} for t in targets]
        return call(self, model, dense, moved, *args, **kwargs)

    patched = {"loss_direction_dropped": dropped, "keypoint_target_one_cell_off": shifted}  # the criterion's
    if mistake in patched:
        loss_module.FCPoseCriterion.__call__ = patched[mistake]
    else:  # every loaded fcpose module's cell_to_pixel (imported by name)
        cell = locations.cell_to_pixel
        for module in [m for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith("fcpose")]:
            if hasattr(module, "cell_to_pixel"):
                module.cell_to_pixel = lambda index, stride: cell(index, stride) + 1


def training_results(dtype: torch.dtype, cases: list[str]) -> dict:
    """Losses and gradients of the golden batches (and the three SGD steps' final parameters) in ``dtype``."""
    from fcpose.config import load_config
    from fcpose.engine.optim import build_optimizer, build_scheduler, clip_gradients

    gold = torch.load(GOLDEN_TRAIN_FILE, weights_only=True)
    out = {}
    for case in cases:
        model = t._model(GOLDEN_TRAIN_FILE).to(dtype)
        record = gold["batch_B" if case == "B" else "batch_A"]
        if case == "live":
            with torch.no_grad():
                for lo, hi in gold["batch_A_live_heads_extra"]["modification"]["slices_plus_20"]:
                    model.head.controller.bias[lo:hi] += gold["batch_A_live_heads_extra"]["modification"]["shift"]
        steps = 3 if case == "A" else 1
        cfg = load_config("fcpose_r50_official", ["solver.base_lr=0.004", "solver.ims_per_batch=2",
                                                  "solver.reference_batch=2", "solver.warmup_iters=1",
                                                  "solver.steps=[324]", "solver.max_iter=360"])
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg)
        initial = t.official_params(model)
        for step in range(steps):
            result = t._run(model, record)
            if step == 0:
                out[case] = {"losses": result["losses"], "grads": result["grads"], "bn": result["bn"]}
            if case == "A":  # the losses at each SGD step
                out[f"step{step}"] = {"losses": result["losses"]}
            clip_gradients([p for p in model.parameters() if p.requires_grad], cfg)
            optimizer.step()
            scheduler.step()
        if case == "A":  # what three steps changed
            out["sgd"] = {k: v - initial[k] for k, v in t.official_params(model).items()}
    return out


def intermediate_results(dtype: torch.dtype) -> dict:
    """The inference intermediates of ``test_intermediates_match_official`` in ``dtype``."""
    from fcpose.weights.checkpoint import load_model

    model = load_model(GOLDEN / p.CKPT).to(dtype)
    d = torch.load(GOLDEN / "intermediates_r50.pt", weights_only=True)
    pairs = p.intermediate_pairs(model, d)
    del pairs["input"], pairs["argmax"]  # compared exactly by the test
    return {name: ours for name, (ours, _) in pairs.items()} | {f"golden:{n}": ref for n, (_, ref) in pairs.items()}


def export_results(tmp: Path, openvino: bool = True) -> dict:
    """The tests' tiny model (``make_lively``, seed 0) on the coco_tiny images through PyTorch, onnxruntime and
    (``openvino``) OpenVINO fp32, as ``test_onnx`` / ``test_openvino`` run them: ``{backend: [detections]}``."""
    import fcpose
    from fcpose.cpu import onednn_cap_below_cpu
    from fcpose.export.onnx import export_onnx
    from fcpose.export.onnx_predictor import OnnxPredictor
    from fcpose.export.openvino import onnx_to_openvino
    from fcpose.export.openvino_predictor import OpenVinoPredictor

    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny"))
    onnx_path = export_onnx(model, tmp / "tiny.onnx", dynamic=True)
    predictors = {"torch": fcpose.Predictor(model, score_threshold=0.05),
                  "onnxruntime": OnnxPredictor(onnx_path, score_threshold=0.05)}
    # OpenVINO crashes under a capped oneDNN
    if openvino and importlib.util.find_spec("openvino") and not onednn_cap_below_cpu():
        predictors["openvino"] = OpenVinoPredictor(onnx_to_openvino(onnx_path, tmp / "tiny.xml"), score_threshold=0.05)
    images = sorted(COCO_TINY.glob("*.jpg"))
    return {name: [{k: getattr(d, k) for k in ("locations", "boxes", "scores", "keypoints")}
                   for d in map(pred, images)] for name, pred in predictors.items()}


def export_deviation(results: dict, backend: str) -> dict:
    """``backend`` against PyTorch over the same people: the largest |difference| of person scores, boxes (px),
    keypoint scores, keypoints (px), and the share of keypoints more than 0.5 px away (arg-max ties)."""
    out = {"score": 0.0, "box_px": 0.0, "keypoint_score": 0.0, "keypoint_px": 0.0, "moved": 0, "keypoints": 0}
    for a, b in zip(results[backend], results["torch"]):
        assert torch.equal(a["locations"], b["locations"]), "different people"
        out["score"] = max(out["score"], float((a["scores"] - b["scores"]).abs().max()))
        out["box_px"] = max(out["box_px"], float((a["boxes"] - b["boxes"]).abs().max()))
        out["keypoint_score"] = max(out["keypoint_score"],
                                    float((a["keypoints"][..., 2] - b["keypoints"][..., 2]).abs().max()))
        moved = (a["keypoints"][..., :2] - b["keypoints"][..., :2]).abs().amax(-1)
        out["moved"] += int((moved > 0.5).sum())
        out["keypoints"] += moved.numel()
        out["keypoint_px"] = max(out["keypoint_px"], float(moved[moved <= 0.5].max()))
    return out


def flip_pair_distance(results: dict) -> float:
    """What a swapped flip pair would cost: the median distance (px) between left and right keypoints of the
    people PyTorch finds (the deviation the swap would put on those keypoints)."""
    from fcpose.config import load_config

    flip = torch.tensor(load_config("fcpose_r18_tiny").keypoints.flip_index())
    kp = torch.cat([d["keypoints"] for d in results["torch"]])[..., :2]
    return float((kp - kp[:, flip]).norm(dim=-1)[:, flip != torch.arange(len(flip))].median())


def child(args) -> None:
    torch.set_num_threads(2)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.mistake:
        make_mistake(args.mistake)
    if args.cases.startswith("exports"):  # "exports_onnx": without OpenVINO (--smoke)
        with tempfile.TemporaryDirectory() as tmp:
            return torch.save(export_results(Path(tmp), openvino=args.cases == "exports"), args.child_out)
    with float64_criterion() if dtype == torch.float64 else contextlib.nullcontext():
        result = {"training": training_results(dtype, [c for c in args.cases.split(",") if c])}
    if not args.mistake:  # the dynamic heads' peak search runs in fp32 whatever the features' dtype
        result["intermediates"] = intermediate_results(dtype)
    torch.save(result, args.child_out)


def run_child(tmp: Path, tag: str, env: dict, dtype: str, cases: str, mistake: str = "") -> dict:
    """One measurement in a fresh process under ``env``; a result already in ``tmp`` (``--work``) is reused."""
    path = tmp / f"{tag}-{cases.replace(',', '')}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    cmd = [sys.executable, __file__, "--child-out", str(path), "--dtype", dtype, "--cases", cases, "--mistake", mistake]
    print(f"  {tag}: {' '.join(f'{k}={v}' for k, v in env.items()) or '(as is)'} {dtype}", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, **env})
    return torch.load(path, weights_only=True)


def golden_references(cases: list[str]) -> dict:
    """What the golden data stores, by group: ``{group: {name: (kind, reference)}}`` (kind: tensor, loss, norm)."""
    gold = torch.load(GOLDEN_TRAIN_FILE, weights_only=True)
    refs = {}
    for case in cases:
        g = gold["batch_A_live_heads_extra"] if case == "live" else gold[f"batch_{case}"]
        groups = {"grad": {}, "grad_noisy": {}, "norm": {}, "norm_noisy": {}}  # as the tests split them
        for group, kind, key in (("grad", "tensor", "grads_fp32"), ("norm", "norm", "grad_norms_l2_float64")):
            for name, ref in g[key].items():  # the dead heads' gradients (A, B) are rounding noise of an exact zero,
                dead = case != "live" and name.startswith("proposal_generator.fcpose_head.atten_producer.")
                if not dead and (kind == "tensor" or ref):  # checked by scale only; zero norms have no scale
                    noisy = case != "live" and name.startswith(t.NOISY)
                    groups[f"{group}_noisy" if noisy else group][name] = (kind, ref)
        refs.update({f"{case}.{group}": entries for group, entries in groups.items() if entries})
        refs[f"{case}.loss"] = {k: ("loss", g["loss_dict"][t.OFFICIAL_NAMES[k]]) for k in t.OFFICIAL_NAMES}
        if case == "live":  # the controller weight's gradient: per-row norms and six rows
            refs["live.grad"]["controller.row_l2"] = ("tensor", g["atten_producer_weight_grad_row_l2"])
            rows = g["atten_producer_weight_grad_rows_0_1088_1120_2144_2176_2720"]
            refs["live.grad"]["controller.rows"] = ("tensor", rows)
        else:
            refs[f"{case}.bn"] = {k: ("tensor", v) for k, v in g["basis_bn_stats_after_forward"].items()
                                  if not k.endswith("num_batches_tracked")}
    if "A" in cases:  # three SGD steps: the change of each parameter (the golden's final minus the start)
        initial = t.official_params(t._model(GOLDEN_TRAIN_FILE))
        updates = {k: v - initial[k] for k, v in gold["sgd_3steps_batch_A"]["final_params"].items()}
        scale = max(float(u.abs().max()) for u in updates.values())
        refs["sgd.loss"] = {f"{i}:{k}": ("loss", step["loss_dict"][t.OFFICIAL_NAMES[k]])
                            for i, step in enumerate(gold["sgd_3steps_batch_A"]["steps"]) for k in t.OFFICIAL_NAMES}
        refs["sgd.update"] = {k: ("tensor", u) for k, u in updates.items() if not k.startswith(t.NOISY)}
        # the noisy tensors' updates are rounding noise of an exact zero: against the largest update of all
        refs["sgd.update_noisy"] = {k: ("scaled", (u, scale)) for k, u in updates.items() if k.startswith(t.NOISY)}
    return refs


def measure(kind: str, ours, ref) -> float:
    if kind == "tensor":
        return t.rel(ours, ref)
    if kind == "scaled":  # (reference, scale): max|ours - reference| / scale
        return float((ours.double() - ref[0].double()).abs().max()) / ref[1]
    value = float(ours.double().norm()) if kind == "norm" else float(ours)
    return abs(value - float(ref)) / abs(float(ref))


def lookup(result: dict, group: str, name: str):
    case, part = group.split(".")
    if group == "sgd.loss":  # "step:loss name"
        step, name = name.split(":")
        return result["training"][f"step{step}"]["losses"][name]
    if case == "sgd":
        return result["training"]["sgd"][name]
    entry = result["training"][case]
    if name.startswith("controller."):
        g = entry["grads"][t.CONTROLLER]
        return g.norm(dim=1) if name == "controller.row_l2" else g[t.CONTROLLER_ROWS]
    return {"loss": entry["losses"], "bn": entry["bn"]}.get(part, entry["grads"])[name]


def worst(values: dict[str, float]) -> dict:
    name = max(values, key=values.get)
    return {"max": values[name], "where": name}


def compare(refs: dict, a: dict, b: dict | None = None) -> dict:
    """Per group, the largest measure of ``a`` against ``b`` (or against the golden data when ``b`` is None)."""
    report = {}
    for group, entries in refs.items():
        values = {}
        for name, (kind, ref) in entries.items():
            other = ref if b is None else lookup(b, group, name)
            if b is not None and kind == "norm":
                other = float(other.double().norm())
            elif b is not None and kind == "scaled":
                other = (other, ref[1])
            values[name] = measure(kind, lookup(a, group, name), other)
        report[group] = worst(values)
    return report


def deviation(refs: dict, a: dict, b: dict | None = None) -> dict:
    """:func:`compare`, and the largest intermediate deviation of ``a`` against ``b`` (None: the golden tensors)."""
    ours = {k: v for k, v in a["intermediates"].items() if not k.startswith("golden:")}
    other = {k: a["intermediates"][f"golden:{k}"] for k in ours} if b is None else b["intermediates"]
    return {**compare(refs, a, b), "intermediates": worst({k: t.rel(v, other[k]) for k, v in ours.items()})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="the JSON report (default: results/parity_noise.json; --smoke: none)")
    ap.add_argument("--smoke", action="store_true", help="the intermediates only, one setting, no mistakes or OpenVINO")
    ap.add_argument("--work", type=Path, help="keep each run's results here and reuse those already there")
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="A,B,live", help=argparse.SUPPRESS)
    ap.add_argument("--mistake", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_out:
        return child(args)
    cases = "" if args.smoke else "A,B,live"
    settings = {"as_is": {}} if args.smoke else SETTINGS
    refs = golden_references([c for c in cases.split(",") if c])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.work or tmp
        Path(tmp).mkdir(parents=True, exist_ok=True)
        ours64 = run_child(Path(tmp), "float64", {}, "float64", cases)
        from fcpose.cpu import cpu_info, instruction_set

        model, flags = cpu_info()
        report = {"cpu": model, "instruction_set": instruction_set(flags), "torch": torch.__version__,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "golden_vs_ours64": deviation(refs, ours64), "settings": {}, "mistakes": {}}
        for tag, env in settings.items():
            ours32 = run_child(Path(tmp), tag, env, "float32", cases)
            report["settings"][tag] = {"env": env, "ours32_vs_ours64": deviation(refs, ours32, ours64),
                                       "ours32_vs_golden": deviation(refs, ours32)}
            exports = run_child(Path(tmp), f"{tag}-exports", env, "float32",
                                "exports_onnx" if args.smoke else "exports")
            report["settings"][tag]["exports_vs_torch"] = {b: export_deviation(exports, b)
                                                           for b in ("onnxruntime", "openvino") if b in exports}
            report["flip_pair_swapped_px"] = flip_pair_distance(exports)
        for mistake in () if args.smoke else MISTAKES:
            report["mistakes"][mistake] = compare(refs, run_child(Path(tmp), mistake, {}, "float32", cases, mistake))
    out = args.out or (None if args.smoke else REPO / "benchmarks" / "results" / "parity_noise.json")
    if out:
        write_json(report, out)
    print(json.dumps(_summary(report), indent=1))


def _summary(report: dict) -> dict:
    """Per group: the golden's own rounding, our largest rounding and deviation over the settings, mistakes."""
    groups = report["golden_vs_ours64"]
    out = {}
    for g in groups:
        row = {"golden_vs_ours64": groups[g]["max"],
               "ours32_vs_ours64": max(s["ours32_vs_ours64"][g]["max"] for s in report["settings"].values()),
               "ours32_vs_golden": max(s["ours32_vs_golden"][g]["max"] for s in report["settings"].values())}
        mistakes = [m[g]["max"] for m in report["mistakes"].values() if g in m]
        if mistakes:
            row["smallest_mistake"] = min(mistakes)
        out[g] = {k: float(f"{v:.3g}") for k, v in row.items()}
    return out


if __name__ == "__main__":
    main()
