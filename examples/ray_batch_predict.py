"""Batch inference on Ray Data: a folder of images (or a Parquet file of image bytes) -> one COCO predictions.json.

    pip install 'fcpose[ray]'
    python examples/ray_batch_predict.py photos/ --out results/                       # the demo model, local Ray
    python examples/ray_batch_predict.py --parquet images.parquet --column image --out results/
    python examples/ray_batch_predict.py photos/ --weights fcpose_r50_official --workers 4 --batch 16 --out results/

It starts a local Ray (``--num-cpus``) unless ``RAY_ADDRESS`` names a cluster to join; each of ``--workers`` Ray
workers loads the model once (:class:`fcpose.inference.ray_data.RayPredictor`) and takes ``--batch`` rows at a time.
On a local Ray the workers share all CPUs but one (left for reading the images) unless ``--cpus-per-worker`` is given.
On GPUs: ``--device cuda --gpus-per-worker 1`` (docs/ray.md). Rows that fail (an unreadable image) are listed on
stderr and left out of predictions.json; the exit status is then 1 (2: nothing could start, one line)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from fcpose.cli import add_model_options
from fcpose.errors import FCPoseError, InputError, worker_message
from fcpose.fileio import output_dir
from fcpose.inference.ray_data import RayPredictor, image_column, read_image_files, require_ray, write_coco_results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns (or give --parquet)")
    p.add_argument("--parquet", help="a Parquet file or folder whose --column holds encoded images")
    p.add_argument("--column", help="the image column (default: the first of image, bytes, path)")
    # the model options of every fcpose command (cuda: the GPU Ray gives each worker)
    add_model_options(p, "weights", "backend", "device", "precision", "size", "max-size", weights_required=False)
    p.set_defaults(weights="fcpose_synth_demo")
    p.add_argument("--workers", type=int, default=2, help="Ray workers, each with its own model (default 2)")
    p.add_argument("--batch", type=int, default=8, help="rows per call of a worker (default 8)")
    p.add_argument("--cpus-per-worker", type=float,
                   help="CPUs Ray reserves per worker, and so its threads (1 thread below 2; default: on a local Ray "
                        "an equal share of all CPUs but one, which the read tasks need; on a cluster 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs Ray reserves per worker (default 0)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all; ignored with RAY_ADDRESS)")
    p.add_argument("--out", required=True, help="output folder for predictions.json")
    args = p.parse_args(argv)
    if bool(args.inputs) == bool(args.parquet):
        p.error("give image inputs or --parquet (one of the two)")
    return args


def worker_cpus(given: float | None, workers: int, total: float, local: bool) -> float:
    """The CPUs Ray reserves per worker: ``given``, else on a local Ray an equal share (to 0.01, rounded down) of
    all ``total`` CPUs but one, else 1. Workers that hold every CPU of a local Ray leave none for the read tasks,
    and Ray Data waits for one forever (ray-project/ray#44687): such a setting is refused with one line."""
    if given is None:
        given = math.floor(max(total - 1, 0) / workers * 100) / 100 if local else 1.0
    free = total - workers * given
    if local and free < 1 - 1e-9:
        raise FCPoseError(f"{workers} workers x {given:g} CPUs leave {max(free, 0):g} of Ray's CPUs for reading "
                          "the images, and Ray Data would wait for one forever: give fewer --workers, a smaller "
                          "--cpus-per-worker (0.5: one thread each) or more --num-cpus")
    return given


def check_columns(names: list[str], types: list, column: str | None) -> None:
    """Refuse, before any inference, a table whose rows could not be told apart in predictions.json: no image column,
    or neither an ``image_id`` nor a ``path`` column and an image column of bytes or arrays (paths name the rows)."""
    import pyarrow as pa

    kind = dict(zip(names, types))[image_column(names, column)]
    paths = isinstance(kind, pa.DataType) and (pa.types.is_string(kind) or pa.types.is_large_string(kind))
    if "image_id" not in names and "path" not in names and not paths:
        raise InputError(f"the rows have neither an image_id nor a path column (columns: {', '.join(names)}), so "
                         "their people could not be told apart in predictions.json: add one of the two")


def run(args: argparse.Namespace) -> int:
    ray = require_ray()
    start = time.perf_counter()
    ray.init(**({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": args.num_cpus, "include_dashboard": False}))
    started = time.perf_counter()
    cpus = worker_cpus(args.cpus_per_worker, args.workers, ray.cluster_resources().get("CPU", 0),
                       local=not os.environ.get("RAY_ADDRESS"))
    ds = ray.data.read_parquet(args.parquet) if args.parquet else read_image_files(args.inputs)
    if args.parquet and (schema := ds.schema()) is not None:
        check_columns(list(schema.names), list(schema.types), args.column)
    model = dict(weights=args.weights, backend=args.backend, device=args.device, precision=args.precision,
                 min_size=args.size, max_size=args.max_size, batch_size=args.batch, column=args.column)
    rows = ds.map_batches(RayPredictor, fn_constructor_kwargs=model, batch_size=args.batch, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=args.workers), num_cpus=cpus,
                          num_gpus=args.gpus_per_worker or None)
    try:
        rows = rows.take_all()
    except ray.exceptions.RayError as exc:  # e.g. a worker could not load the model: its error's own message
        raise FCPoseError(worker_message(exc, marker="")) from None
    done = time.perf_counter()
    for row in rows:
        if row["error"]:
            name = row["file_name"] or f"image_id {row['image_id']}"
            print(f"skipped: {name}: {row['error']}", file=sys.stderr)
    with output_dir(args.out) as out:
        path, failed = write_coco_results(rows, out / "predictions.json")
    predict_s = sum(float(r["predict_ms"]) for r in rows) / 1000
    print(f"{len(rows)} images on {args.workers} Ray workers of {cpus:g} CPUs in {done - started:.1f} s "
          f"({len(rows) / (done - started):.2f} images/s; Ray start {started - start:.1f} s; model time "
          f"{predict_s:.1f} s over all workers) -> {path}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(rows)} images failed (listed above)", file=sys.stderr)
    ray.shutdown()
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except FCPoseError as exc:
        print(f"{Path(__file__).stem}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
