"""What int8 costs: keypoint AP and keypoint deviations of OpenVINO fp32/int8 against fp32 PyTorch.

    python benchmarks/openvino_int8.py            # demo model on held-out synthetic scenes + golden R-50

Through the commands a user has (``fcpose synth``, ``fcpose export --format openvino --int8
--calibration``, ``fcpose eval [--backend openvino]``): ``synthetic``, the demo checkpoint
(``fcpose_synth_demo``, trained on synthetic scenes of seed 1) on held-out scenes (seed 2) in fp32
PyTorch, OpenVINO fp32, OpenVINO int8 (controller and dynamic heads fp32) and int8 with the heads quantised
(``--int8-heads``), calibrated on ``--calib`` scenes of seed 1; ``golden``, the official-layout R-50 on the 4
coco_tiny images, calibrated on the same 4 (a numerical check, not a held-out score). Per int8 model: AP and
AP50 against fp32 PyTorch, and for the people both find (greedy box IoU >= 0.5, best scores first) the keypoint
deviation percentiles (px; all keypoints and those fp32 scores >= 0.05), the matched share and the score
differences, for fp32 people scoring >= 0.05 (``vs_torch_fp32``) and >= 0.5 (``vs_torch_fp32_confident``).
Writes ``benchmarks/results/openvino_int8_accuracy.json``.

The speed side: ``fcpose bench --backends torch,onnxruntime,openvino,openvino-int8`` (README "OpenVINO").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools.mask import iou as box_iou_xywh  # IoU of COCO (xywh) boxes

from fcpose.bench.people import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("FCPOSE_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "adelaidet_fcpose" / "model_r50_fp16.pth"
COCO_TINY = SHARED / "data" / "coco_tiny"


def fcpose(*args: str) -> float:
    """Run ``fcpose ARGS`` as a user would; returns the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fcpose", *args], check=True, cwd=REPO)
    return round(time.perf_counter() - t0, 1)


def compare_results(ref: list[dict], other: list[dict], min_score: float = 0.05, iou: float = 0.5) -> dict:
    """People of ``ref`` (fp32) matched to ``other`` (greedy, best ref scores first, IoU >= ``iou``) and the
    keypoint deviations (pixels) of the matched pairs."""
    by_image: dict[int, tuple[list, list]] = {}
    for side, results in enumerate((ref, other)):
        for r in results:
            by_image.setdefault(r["image_id"], ([], []))[side].append(r)
    dev_all, dev_scored, score_diff = [], [], []
    matched = total = 0
    for a_list, b_list in by_image.values():
        a_list = sorted((r for r in a_list if r["score"] >= min_score), key=lambda r: -r["score"])
        total += len(a_list)
        if not a_list or not b_list:
            continue
        ious = box_iou_xywh([r["bbox"] for r in a_list], [r["bbox"] for r in b_list], [0] * len(b_list))
        used = set()
        for i, a in enumerate(a_list):
            j = next((int(j) for j in np.argsort(-ious[i]) if j not in used and ious[i, j] >= iou), None)
            if j is None:
                continue
            used.add(j)
            matched += 1
            ka, kb = np.reshape(a["keypoints"], (-1, 3)), np.reshape(b_list[j]["keypoints"], (-1, 3))
            d = np.linalg.norm(ka[:, :2] - kb[:, :2], axis=1)
            dev_all.extend(d.tolist())
            dev_scored.extend(d[ka[:, 2] >= 0.05].tolist())
            score_diff.append(abs(a["score"] - b_list[j]["score"]))

    def pct(values):
        if not values:
            return None
        v = np.asarray(values)
        return {f"p{q}": round(float(np.percentile(v, q)), 3) for q in (50, 75, 90, 95, 99)} | \
            {"max": round(float(v.max()), 3), "mean": round(float(v.mean()), 3), "n": int(v.size),
             "share_within_1px": round(float((v <= 1.0).mean()), 4)}

    return {"people_fp32": total, "matched": matched, "matched_share": round(matched / max(1, total), 4),
            "people_other": len([r for r in other if r["score"] >= min_score]),
            "keypoint_px_all": pct(dev_all), "keypoint_px_scored": pct(dev_scored),
            "person_score_abs_diff": pct(score_diff)}


def evaluate(name: str, weights: Path, backend: str, ann: Path, images: Path, work: Path) -> dict:
    metrics, results = work / f"{name}_metrics.json", work / f"{name}_results.json"
    seconds = fcpose("eval", "--data", str(ann), "--images", str(images), "--weights", str(weights), "--backend",
                     backend, "--no-progress", "--json", str(metrics), "--results", str(results))
    m = json.loads(metrics.read_text())
    return {"metrics": m, "eval_s": seconds, "results": json.loads(results.read_text())}


def score_variants(label: str, checkpoint: str | Path, ann: Path, images: Path, calibration: str, calib_n: int,
                   work: Path, variants: list[tuple[str, list[str]]]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = {"checkpoint": str(checkpoint), "annotations": str(ann), "calibration": calibration,
           "calibration_images": calib_n, "variants": {}}
    ref = evaluate(f"{label}_torch_fp32", checkpoint, "torch", ann, images, work)
    out["torch_fp32"] = {"keypoints": ref["metrics"]["keypoints"], "bbox": ref["metrics"]["bbox"],
                         "eval_s": ref["eval_s"]}
    for name, export_args in variants:
        xml = work / f"{label}_{name}.xml"
        export_s = fcpose("export", "--weights", str(checkpoint), "--format", "openvino", "--out", str(xml),
                          *export_args)
        res = evaluate(f"{label}_{name}", xml, "openvino", ann, images, work)
        kp, kp0 = res["metrics"]["keypoints"], ref["metrics"]["keypoints"]
        out["variants"][name] = {
            "export_args": export_args, "export_s": export_s, "eval_s": res["eval_s"],
            "keypoints": kp, "bbox": res["metrics"]["bbox"],
            "keypoint_AP_diff": round(kp["AP"] - kp0["AP"], 4),
            "keypoint_AP50_diff": round(kp["AP50"] - kp0["AP50"], 4),
            "vs_torch_fp32": compare_results(ref["results"], res["results"]),
            "vs_torch_fp32_confident": compare_results(ref["results"], res["results"], min_score=0.5),
        }
        v = out["variants"][name]
        print(f"[{label}] {name}: keypoint AP {kp['AP']:.4f} (fp32 torch {kp0['AP']:.4f}, diff "
              f"{v['keypoint_AP_diff']:+.4f}); matched {v['vs_torch_fp32']['matched_share']:.3f}, keypoint px "
              f"{v['vs_torch_fp32']['keypoint_px_all']}", flush=True)
    return out


def accuracy(args) -> int:
    import fcpose as pkg

    work = Path(args.work)
    report = {"what": __doc__.split("\n\n")[2].strip(), "fcpose": pkg.__version__, "sets": {}}
    try:
        import nncf
        import openvino

        report["openvino"], report["nncf"] = openvino.get_version(), nncf.__version__
    except ImportError as exc:
        raise SystemExit(f"needs pip install 'fcpose[openvino]': {exc}") from None
    if "synthetic" in args.sets:
        calib, held = work / "synth_calib_seed1", work / "synth_heldout_seed2"
        for folder, num, seed in ((calib, args.calib, "1"), (held, args.heldout, "2")):
            if not (folder / "annotations.json").is_file():
                fcpose("synth", "--out", str(folder), "--num", str(num), "--seed", seed)
        cal = ["--calibration", str(calib / "annotations.json"), "--calib-images", str(args.calib)]
        variants = [("openvino_fp32", []), ("openvino_int8", ["--int8", *cal]),
                    ("openvino_int8_heads_int8", ["--int8", "--int8-heads", *cal])]
        report["sets"]["synthetic"] = score_variants("synthetic", "fcpose_synth_demo",
                                                     held / "annotations.json", held / "images", str(calib),
                                                     args.calib, work / "synthetic", variants)
        report["sets"]["synthetic"]["heldout_images"] = args.heldout
    if "golden" in args.sets and GOLDEN.is_file():
        ann = COCO_TINY / "person_keypoints.json"
        cal = ["--int8", "--calibration", str(ann)]
        report["sets"]["golden_coco_tiny"] = score_variants(
            "golden", GOLDEN, ann, COCO_TINY, str(ann), 4, work / "golden", [("openvino_int8", cal)])
    elif "golden" in args.sets:
        report["sets"]["golden_coco_tiny"] = {"skipped": f"{GOLDEN} is absent"}
    print(f"wrote {write_json(report, args.out)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="synthetic,golden")
    p.add_argument("--calib", type=int, default=100, help="calibration scenes (training seed 1)")
    p.add_argument("--heldout", type=int, default=200, help="held-out scenes (seed 2)")
    p.add_argument("--work", default="/tmp/fcpose_openvino_int8")
    p.add_argument("--out", default=str(RESULTS / "openvino_int8_accuracy.json"))
    return accuracy(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
