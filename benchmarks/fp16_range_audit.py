"""fp16 range audit of a training step: the largest |value| of every intermediate against fp16's 65,504.

Runs real training steps in **fp32** (where nothing overflows) on a COCO-format dataset and records, for every
tensor an op returns during the forward pass and the loss, the largest finite absolute value, labelled by the
innermost module that ran it (``backbone.layer4``, ``head.controller``, ...) or, outside modules, by the fcpose
function that called it (``loss.official_keypoint_losses``, ``targets.pose.assign_official_keypoint_targets``).
After the backward it records the largest |gradient| of each top-level part's parameters. Every group whose
maximum exceeds fp16's largest value (65,504) is flagged: under ``torch.autocast(dtype=float16)`` that tensor
(if it is computed in fp16) becomes inf, and the loss NaN.

    python benchmarks/fp16_range_audit.py --config fcpose_r50_official --data ANN.json --images DIR \
        --steps 4 --size 512 --batch 2 [--set model.backbone.norm=GN] [--init CKPT] --json out.json

Prints one table per step (groups sorted by their maximum) and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcpose.config import load_config  # noqa: E402
from fcpose.engine.trainer import TrainSession  # noqa: E402

FP16_MAX = 65504.0


class RangeRecorder(TorchFunctionMode):
    """Records max |x| of every floating tensor returned by a torch function, by label (module or caller)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.stack: list[str] = []
        self.maxima: dict[str, float] = defaultdict(float)
        self.handles = []
        for name, module in model.named_modules():
            if not name:
                continue
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module, args):
            self.stack.append(name)
        return hook

    def _leave(self, module, args, output):
        self.stack.pop()

    def _label(self) -> str:
        if self.stack:
            return self.stack[-1]
        frame = sys._getframe(2)
        while frame is not None:
            mod = frame.f_globals.get("__name__", "")
            if mod.startswith("fcpose.") and not mod.startswith("fcpose.engine"):
                return f"{mod.removeprefix('fcpose.')}.{frame.f_code.co_name}"
            frame = frame.f_back
        return "other"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if "empty" in getattr(func, "__name__", ""):  # uninitialised memory, overwritten before it is read
            return out
        with torch._C.DisableTorchFunction():
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                    a = t.detach().abs()
                    a = a[torch.isfinite(a)]
                    if a.numel():
                        label = self._label()
                        self.maxima[label] = max(self.maxima[label], float(a.max()))
        return out

    def close(self):
        for h in self.handles:
            h.remove()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fcpose_r50_official")
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="training short side (fixed)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--init", default=None, help="checkpoint to start from (default: from scratch)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", default=None)
    ap.add_argument("--output", default="/tmp/fp16_range_audit")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, [f"input.min_size_train=[{args.size}, {args.size}]",
                                    f"solver.ims_per_batch={args.batch}", f"solver.max_iter={args.steps}",
                                    "solver.precision=fp32", "solver.num_workers=0", *args.overrides])
    session = TrainSession.setup(cfg, data=args.data, images=args.images, output=args.output, init=args.init,
                                 device="cpu", progress=False)
    steps = []
    for it, batch in enumerate(session.loader):
        recorder = RangeRecorder(session.model)
        with recorder:
            losses, total = session.forward_loss(batch)
        recorder.close()
        grad_norm, finite, _ = session.backward_step(total)
        grads: dict[str, float] = defaultdict(float)
        for name, p in session.model.named_parameters():
            if p.grad is not None:
                part = ".".join(name.split(".")[:2])
                grads[part] = max(grads[part], float(p.grad.detach().abs().max()))
        session.optimizer_step(finite)
        over = {k: v for k, v in recorder.maxima.items() if v > FP16_MAX}
        step = {"iteration": it, "losses": {k: float(v.detach()) for k, v in losses.items()},
                "grad_norm": float(grad_norm), "forward_max": dict(recorder.maxima),
                "over_fp16": over, "grad_max": dict(grads)}
        steps.append(step)
        top = sorted(recorder.maxima.items(), key=lambda kv: -kv[1])[:12]
        print(f"iteration {it}: total loss {float(total):.3f}, grad norm {float(grad_norm):.3g}, "
              f"{len(over)} of {len(recorder.maxima)} groups above fp16's {FP16_MAX:.0f}")
        for label, value in top:
            print(f"  {value:12.4g}  {'OVER ' if value > FP16_MAX else '     '}{label}")
        if args.json:  # after every step, so an interrupted audit keeps what it measured
            Path(args.json).write_text(json.dumps({"config": args.config, "size": args.size, "batch": args.batch,
                                                   "overrides": args.overrides, "init": args.init, "steps": steps},
                                                  indent=1))
    if args.json:
        print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
