"""Inference over a COCO-format dataset and its evaluation (``fcpose eval``); sharded under torchrun."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from .. import distributed as dist
from ..errors import InputError
from ..fileio import atomic_write_text
from ..structures import PosePredictor
from .crowding import evaluate_split, format_split
from .evaluation import evaluate_keypoints, load_gt, load_results, resolve_protocol


def dataset_images(ann_file: str | Path, image_dir: str | Path, coco=None) -> list[tuple[int, Path]]:
    """(image id, path) of every image of a COCO annotation file, in id order.

    The folder is checked against the file first: when it holds none of the images (a wrong ``--images``),
    one :class:`~fcpose.errors.InputError` line says how many of N were found and where the first was
    looked for, instead of one "not found" per image. Some missing images are :func:`predict_dataset`'s
    business (scored as having no detections, reported in one line). ``coco``: the file's :func:`load_gt`, when
    the caller has it."""
    coco = load_gt(ann_file) if coco is None else coco
    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    items = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        items.append((int(image_id), root / info["file_name"]))
    if items and not any(path.is_file() for _, path in items):
        example = " ".join(str(items[0][1]).split())  # one line, whatever the file name holds
        raise InputError(f"0 of the {len(items)} images of {ann_file} were found in {root} (e.g. {example} does "
                         f"not exist): give --images the folder that holds the file names of the annotation file")
    return items


def predict_dataset(predictor: PosePredictor, ann_file: str | Path, image_dir: str | Path, progress: bool = True,
                    skipped: list[str] | None = None, items: list[tuple[int, Path]] | None = None) -> list[dict]:
    """COCO results for every image of the dataset. Under torch.distributed each rank predicts a shard
    (every world_size-th image); rank 0 returns the gathered, id-sorted results, the other ranks an empty list.

    ``items``: :func:`dataset_images` of the dataset when the caller has it already. Images missing from the
    folder are reported in one line (how many, one example) and, like unreadable ones (one line each, by the
    process that met it), count as having no detections and are added to ``skipped`` — every process's, on
    every rank."""
    from ..data.images import read_image

    items = dataset_images(ann_file, image_dir) if items is None else items
    missing = [path for _, path in items if not path.is_file()]
    if missing and dist.is_main_process():
        example = " ".join(str(missing[0]).split())
        tqdm.write(f"skipped: {len(missing)} of the {len(items)} images of {ann_file} were not found in {image_dir} "
                   f"(e.g. {example}) (scored as no detections)", file=sys.stderr)
    if skipped is not None:
        skipped.extend(f"image not found: {path}" for path in missing)
    absent = set(missing)
    mine = dist.shard(items)
    per_image: list[list[dict]] = []  # one entry per image of this rank's share, for dist.gather_shards
    unreadable: list[str] = []  # this rank's share
    bar = tqdm(mine, desc="eval", unit="img", disable=not progress or not dist.is_main_process(), file=sys.stderr)
    for image_id, path in bar:
        per_image.append([])
        if path in absent:  # said above, in one line for all of them
            continue
        try:
            image = read_image(path)
        except InputError as exc:  # one bad image does not lose the run: it is scored as having no detections
            unreadable.append(str(exc))
            tqdm.write(f"skipped: {exc} (scored as no detections)", file=sys.stderr)
            continue
        per_image[-1] = predictor(image).to_coco(image_id=image_id)
    unreadable = [line for share in dist.all_gather_object(unreadable) for line in share]
    if skipped is not None:
        skipped.extend(unreadable)
    if len(missing) + len(unreadable) == len(items) and items:
        raise InputError(f"none of the {len(items)} images of {ann_file} could be read from {image_dir}")
    shares = dist.gather_shards(per_image)
    results = [] if shares is None else [r for share in shares for r in share]
    results.sort(key=lambda r: (r["image_id"], -r["score"]))
    return results


def format_metrics(metrics: dict) -> str:
    """The metrics as on screen: fractions in [0, 1] with three decimals, exactly as in the ``--json``
    file (``nan``: undefined, no ground truth in that area range)."""
    lines = []
    for kind in ("keypoints", "bbox"):
        if kind in metrics:
            vals = "  ".join(f"{k} {v:.3f}" for k, v in metrics[kind].items())
            lines.append(f"{kind:9s} {vals}")
    return "\n".join(lines)


def run_eval(*, data: str, weights: str | None = None, images: str | None = None, predictions: str | None = None,
             json_out: str | None = None, results_out: str | None = None, device: str = "cpu",
             size: int | None = None, max_size: int | None = None, score_threshold: float | None = None,
             progress: bool = True, backend: str = "torch", optimize: bool = True, protocol: str = "auto",
             split_by: str | None = None) -> int:
    """``fcpose eval``: score a checkpoint (or, with ``backend``, an exported model) on a dataset, or an
    existing results file. ``optimize`` (torch backend): the folded channels-last network, as ``fcpose
    predict`` runs it (the default everywhere). ``protocol``: ``auto`` | ``coco`` | ``crowdpose``
    (:func:`~fcpose.engine.evaluation.resolve_protocol`); ``split_by``: also keypoint AP by ``crowd-index`` or
    ``people`` (:mod:`fcpose.engine.crowding`). The metrics file holds the metrics, ``protocol`` (when not COCO's)
    and ``split`` (with ``split_by``)."""
    if predictions is None and weights is None:
        raise InputError("give --weights CKPT (with --images DIR) or --predictions RESULTS.json")
    if predictions is not None and weights is not None:
        raise InputError("give either --weights or --predictions, not both")
    dist.init_distributed(device)
    skipped: list[str] = []
    def prepare():
        """The ground truth, its protocol, and (with --weights) the images and the model, each checked at once."""
        gt = load_gt(data)
        chosen = resolve_protocol(protocol, gt.dataset)  # a CrowdPose protocol it cannot run fails here
        if predictions is not None:
            return gt, chosen, None, None
        if images is None:
            raise InputError("--weights needs --images DIR (the dataset's image folder)")
        items = dataset_images(data, images, gt)  # before the model loads: a wrong --images fails at once
        from ..inference.backends import load_predictor

        return gt, chosen, items, load_predictor(backend, weights, device=dist.local_device(device), min_size=size,
                                                 max_size=max_size, score_threshold=score_threshold,
                                                 **({"optimize": optimize} if backend == "torch" else {}))

    try:
        # every process the same outcome: a bad input is said once, a failure on one process stops them all
        gt, protocol, items, predictor = dist.same_outcome(prepare)
        sigmas, results = None, None
        if predictor is not None:
            sigmas = predictor.cfg.keypoints.sigmas
            results = predict_dataset(predictor, data, images, progress, skipped, items=items)
        if dist.is_main_process():
            scored = load_results(predictions) if results is None else results  # read once: the split scores it again
            metrics: dict = evaluate_keypoints(gt, scored, sigmas=sigmas, protocol=protocol)
            if protocol != "coco":  # said on screen and in the file; COCO's files stay as they always were
                print(f"protocol: {protocol} (xtcocotools)")
                metrics["protocol"] = protocol
            print(format_metrics(metrics))
            if split_by:
                metrics["split"] = evaluate_split(gt, scored, split_by, protocol=protocol, sigmas=sigmas)
                print(format_split(metrics["split"]))
            if json_out:
                atomic_write_text(json_out, json.dumps(metrics, indent=2), what="metrics file")
            if results_out and results is not None:
                atomic_write_text(results_out, json.dumps(results), what="results file")
            if skipped:
                print(f"{len(skipped)} image(s) could not be read (listed above) and count as having no "
                      f"detections", file=sys.stderr)
        dist.barrier()  # every process waits for rank 0's files: torchrun stops them all when one exits non-zero
    finally:
        dist.cleanup()
    return 1 if skipped else 0
