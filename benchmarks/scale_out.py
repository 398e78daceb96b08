"""Images/s past one process, on this machine (issue 31): ``fcpose predict`` in one process, ``fcpose predict`` under
``torchrun`` with 2 processes, and Ray Data with 2 workers (examples/ray_batch_predict.py), the same images, one run
each.

Each row is one command in a subprocess, timed from its start to its exit: Python and torch imports, model loads,
Ray's start and the output file are included, as a user waits for them. ``own_images_per_s`` is the rate the command
reports itself (predict: inference time only; the example: from Ray's dataset start to the last row, model loads
included). Every row's predictions.json is compared with the one-process file (detections per image, largest
deviations). On 2 shared cores no speed-up is expected: the rows measure what each path costs, and that it is correct.
Without ``ray`` installed, its row says so instead of a number.

    python benchmarks/scale_out.py                                    # 96 images, demo model, 2 processes
    python benchmarks/scale_out.py --images 4 --size 128 --json /tmp/scale_out.json     # CI size
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcpose.assets import SCENE, asset
from fcpose.bench.machine import contention_since, cpu_times, loadavg, machine_info, own_cpu_seconds
from fcpose.bench.people import write_json
from fcpose.data.images import read_image

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int) -> tuple[int, int]:
    """``count`` JPEGs of the bundled scene, each rolled sideways by a different amount (same size, different
    pixels), named ``000001.jpg``...; returns their (height, width)."""
    scene = read_image(asset(SCENE))
    for i in range(count):
        Image.fromarray(np.roll(scene, (i * 37) % scene.shape[1], axis=1)).save(folder / f"{i + 1:06d}.jpg",
                                                                                quality=95)
    return scene.shape[0], scene.shape[1]


def quiet_load(seconds: float = 2.0) -> float | None:
    """Other processes' share of all CPUs over ``seconds`` with nothing of ours running (> ~5: timings disturbed)."""
    stat, load, own = cpu_times(), loadavg(), own_cpu_seconds()
    time.sleep(seconds)
    return contention_since(stat, load, own).get("others_cpu_pct")


def compare(path: Path, reference: list[dict]) -> dict:
    """Detections per image against the one-process predictions.json, and the largest deviations."""
    got = json.loads(path.read_text())
    by_image = {}
    for name, entries in (("got", got), ("ref", reference)):
        for e in entries:
            by_image.setdefault(e["file_name"], {"got": [], "ref": []})[name].append(e)
    same = all(len(v["got"]) == len(v["ref"]) for v in by_image.values())
    out = {"entries": len(got), "same_detections_per_image": same}
    if same and got:
        pairs = [(a, b) for v in by_image.values() for a, b in zip(v["got"], v["ref"])]
        out["max_abs_diff"] = {
            "score": max(abs(a["score"] - b["score"]) for a, b in pairs),
            "bbox_px": max(float(np.abs(np.subtract(a["bbox"], b["bbox"])).max()) for a, b in pairs),
            "keypoint": max(float(np.abs(np.subtract(a["keypoints"], b["keypoints"])).max()) for a, b in pairs)}
    return out


def last_number(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    return float(found[-1]) if found else None


def run_row(name: str, cmd: list, out: Path, images: int, own_rate, limits: str) -> dict:
    """One command, timed from start to exit, with its own reported rate (``own_rate(stderr)``, images/s)."""
    row = {"path": name, "command": " ".join(map(str, cmd)).replace(sys.executable, "python"), "limited_by": limits,
           "others_cpu_pct_before": quiet_load()}
    start = time.perf_counter()
    result = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, cwd=REPO)
    row["wall_s"] = round(time.perf_counter() - start, 2)
    row["returncode"] = result.returncode
    if result.returncode != 0 or not (out / "predictions.json").is_file():
        row["status"] = f"failed (exit {result.returncode}): {(result.stderr.strip().splitlines() or [''])[-1]}"
        return row
    row["status"] = "ok"
    row["images_per_s"] = round(images / row["wall_s"], 3)
    row["own_images_per_s"] = own_rate(result.stderr)
    row["summary_line"] = next((line for line in reversed(result.stderr.splitlines()) if " -> " in line), None)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="fcpose_synth_demo", help="zoo name or checkpoint (default: the demo model)")
    p.add_argument("--images", type=int, default=96, help="images (default 96)")
    p.add_argument("--size", type=int, help="network input's short side (default: the model's)")
    p.add_argument("--batch", type=int, default=4, help="images per network call in every path (default 4)")
    p.add_argument("--processes", type=int, default=2, help="torchrun processes and Ray workers (default 2)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "scale_out.json"))
    args = p.parse_args(argv)
    if args.processes < 2:
        p.error("--processes must be 2 or more: the rows compare one process with several")
    n, size = args.processes, ["--size", args.size] if args.size else []
    predict = ["predict", "--weights", args.weights, "--no-render", "--no-progress", "--batch-size", args.batch, *size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        shape = make_images(tmp / "images", args.images)
        rows = [run_row("one process", [sys.executable, "-m", "fcpose", *predict, tmp / "images", "--out", tmp / "one"],
                        tmp / "one", args.images, lambda err: last_number(r"\(([\d.]+)/s\)", err),
                        f"one process on all cores (torch intra-op threads: {torch.get_num_threads()})")]
        reference = json.loads((tmp / "one" / "predictions.json").read_text()) if rows[0]["status"] == "ok" else None
        rows.append(run_row(
            f"torchrun, {n} processes", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", n, "-m", "fcpose", *predict, tmp / "images", "--out",
                                         tmp / "torchrun"], tmp / "torchrun", args.images,
            lambda err: (ms := last_number(r"([\d.]+) ms per image in each of", err)) and round(n * 1000 / ms, 2),
            f"{n} ranks with 1 thread each (torchrun sets OMP_NUM_THREADS=1) on the same cores; each rank starts "
            "Python and loads the model; rank 0 gathers and writes"))
        ray_missing = None if importlib.util.find_spec("ray") else "not run: ray[data] is not installed"
        rows.append({"path": f"Ray Data, {n} workers", "status": ray_missing} if ray_missing else run_row(
            f"Ray Data, {n} workers", [sys.executable, REPO / "examples" / "ray_batch_predict.py", tmp / "images",
                                       "--weights", args.weights, "--batch", args.batch, "--workers", n, "--num-cpus",
                                       n, "--cpus-per-worker", 0.5, "--out", tmp / "ray", *size],
            tmp / "ray", args.images, lambda err: last_number(r"\(([\d.]+) images/s", err),
            f"a local Ray on {n} CPUs: its start (raylet, GCS, workers), {n} workers of half a CPU (1 thread each: Ray "
            "sets OMP_NUM_THREADS from it; a whole CPU each leaves none for the read tasks, ray-project/ray#44687), "
            "each loading the model; image bytes and rows through Ray's object store"))
        for row, out in zip(rows[1:], ("torchrun", "ray")):
            if row["status"] == "ok" and reference is not None:
                row["predictions_vs_one_process"] = compare(tmp / out / "predictions.json", reference)
    report = {"benchmark": "scale_out", "machine": machine_info(torch.device("cpu")), "weights": args.weights,
              "images": args.images, "image_size": list(shape), "size": args.size, "batch": args.batch,
              "processes": n, "rows": rows}
    write_json(report, args.json)
    print(f"{args.images} images of {shape[1]}x{shape[0]}, {args.weights}, CPU: {report['machine']['cpu_model']} "
          f"({report['machine']['usable_cpus']} usable CPUs)")
    for row in rows:
        if row["status"] != "ok":
            print(f"  {row['path']:<22} {row['status']}")
            continue
        same = row.get("predictions_vs_one_process", {})
        print(f"  {row['path']:<22} {row['wall_s']:7.1f} s  {row['images_per_s']:6.2f} images/s end to end  "
              f"(own rate {row['own_images_per_s']}; others' CPU before: {row['others_cpu_pct_before']}%)"
              + (f"  vs one process: {same}" if same else ""))
    print(f"-> {args.json}")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("not run") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
