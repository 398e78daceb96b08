"""What the sync-free post-processing (``PostProcessor.fixed``) costs per batch: the number of kernels it
launches (what a CUDA graph replays one after another: on a GPU each costs a few microseconds however small
it is) and its CPU time, on dense outputs of the shapes a preset makes at a given input size.

    python benchmarks/fixed_post_cost.py                                  # R-50 @800x1344, batches 1, 4, 16
    python benchmarks/fixed_post_cost.py --preset fcpose_dla34_rt --height 512 --width 736

Kernels are counted with a ``TorchDispatchMode`` on CPU tensors: every ATen operation that is not a view
(a view launches nothing). The shapes, hence the count, do not depend on the data or the device, so the
count is the GPU's too (up to operations a CUDA kernel does in one launch differently). The dense outputs
are random logits (about half the cells above the score threshold: many candidates and long NMS chains, as
the golden checkpoint makes), and the dynamic heads are tiled as on a GPU; time is the median of ``--runs``
after one warm-up, threads as torch sets them.
``--device cuda`` times the same calls eagerly on a GPU (synchronised) and reports their extra peak memory.
Writes ``benchmarks/results/fixed_post_cost.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fcpose.model.dynamic_head import default_tile_bytes
from fcpose.model.fcpose import build_model
from fcpose.postprocess import PostProcessor
from fcpose.structures import DenseOutputs

RESULTS = Path(__file__).resolve().parent / "results"


class KernelCount(TorchDispatchMode):
    """Counts the non-view ATen operations run under it, by name."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def dense_outputs(model, batch: int, height: int, width: int, seed: int = 0, device: torch.device | None = None
                  ) -> DenseOutputs:
    """Random dense outputs with the shapes ``model`` (on the CPU) gives a ``[batch, 3, height, width]`` input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        shapes = model(torch.zeros(1, 3, height, width))

    def like(t: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return (torch.randn((batch, *t.shape[1:]), generator=gen) * scale + shift).to(device or "cpu")

    return DenseOutputs(cls_logits=[like(t, 2.0) for t in shapes.cls_logits],
                        box_reg=[like(t, 0.3, 1.0).exp() * s for t, s in zip(shapes.box_reg, shapes.strides)],
                        centerness=[like(t) for t in shapes.centerness],
                        ctrl_feats=[like(t) for t in shapes.ctrl_feats], kpt_feats=like(shapes.kpt_feats),
                        kpt_offsets=like(shapes.kpt_offsets, 0.1), strides=list(shapes.strides))


def measure(model, post: PostProcessor, dense: DenseOutputs, runs: int) -> dict:
    device = dense.kpt_feats.device
    cuda = device.type == "cuda"
    with torch.no_grad():
        post.fixed(model, dense)  # warm-up (device constants)
        with KernelCount() as count:
            slots = post.fixed(model, dense)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            post.fixed(model, dense)
            if cuda:
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000)
    result = {"kernels": sum(count.ops.values()), "top_ops": dict(count.ops.most_common(8)),
              "ms_median": round(statistics.median(times), 2), "ms_min": round(min(times), 2),
              "exact": bool(slots.exact.all()), "people": int(slots.valid.sum())}
    if cuda:  # eager time (launch-bound); a CUDA graph replays the same kernels without the launch cost
        result["peak_extra_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="fcpose_r50_fpn")
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1344)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu (kernel counts, CPU time) or cuda (also peak memory)")
    ap.add_argument("--json", default=str(RESULTS / "fixed_post_cost.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(args.preset).eval()
    post = PostProcessor.from_model(model)
    post.tile_bytes = default_tile_bytes(torch.device("cuda"))  # the GPU's tiling of the dynamic heads (one tile)
    report = {"preset": args.preset, "input": [args.height, args.width], "torch": torch.__version__,
              "device": str(device), "nms_rounds": post.nms_rounds, "batches": {}}
    for b in (int(x) for x in args.batches.split(",")):
        dense = dense_outputs(model.cpu(), b, args.height, args.width, device=device)
        model.to(device)
        r = measure(model, post, dense, args.runs)
        r["kernels_per_image"] = round(r["kernels"] / b, 1)
        report["batches"][str(b)] = r
        model.cpu()
        memory = f", peak +{r['peak_extra_mb']:.0f} MB" if "peak_extra_mb" in r else ""
        print(f"batch {b:3d}: {r['kernels']:6d} kernels ({r['kernels_per_image']:.0f} per image), "
              f"{args.device} {r['ms_median']:.1f} ms (min {r['ms_min']:.1f}){memory}, exact={r['exact']}, "
              f"{r['people']} people", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
