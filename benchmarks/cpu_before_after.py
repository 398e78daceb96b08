"""CPU speed of two versions of fcpose side by side in one run (a change must not slow the CPU path).

    git worktree add /tmp/fcpose-base bdd6cd2
    python benchmarks/cpu_before_after.py --base /tmp/fcpose-base --rounds 4

Alternates ``fcpose bench`` (the ``run_bench`` function: R-50 at 800, persons 1 and 50, forced N, no
probe, no FLOP count) between the base tree and this tree, each in a fresh process with ``PYTHONPATH`` set
to that tree (same interpreter and packages), ``--rounds`` times each in the order B A B A ..., so that a
drift of the shared machine hits both alike. Reports per version and entry the min and median over the
rounds of each round's median total (and network, nms, heads), and the ratios after/before. Writes
``benchmarks/results/cpu_before_after.json``.

``--post-only``: instead, the post-processing alone (forced N people, as the bench, on the dense outputs of
one network run on the bench's synthetic image, in-process medians of ``--runs`` calls) — the only code the
change touched on the CPU path, timed with far less noise than the 1-2 s network around it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from fcpose.bench.people import write_json

HERE = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CHILD = """
import json, sys, torch
from fcpose.bench.people import run_bench
r = run_bench({config!r}, size={size}, persons={persons!r}, runs={runs}, warmup={warmup}, probe=False, flops=False)
print(json.dumps({{"results": r["results"], "contention": r["contention"], "torch_threads": torch.get_num_threads()}}))
"""


POST_CHILD = """
import json, statistics, time, torch
from fcpose.bench.people import synthetic_image
from fcpose.data.transforms import batch_images
from fcpose.inference.predictor import Predictor
from fcpose.model.fcpose import build_model
torch.manual_seed(0)
p = Predictor(build_model({config!r}), min_size={size}, inplace=True)
image = synthetic_image(p.min_size, p.max_size)
tensor, size = p.prepare(image)
dense = p.runner.network(batch_images([tensor], p.model.size_divisibility))
try:  # this version: the forced selection is the bench's
    from fcpose.bench.people import ForcedSelection
    def post(n):
        forced = ForcedSelection(p.runner.postprocessor, n, 20)
        return lambda: forced(p.runner.model, dense, [size], [image.shape[:2]])
except ImportError:  # before: an option of the runner
    def post(n):
        return lambda: p.runner.postprocess(dense, [size], [image.shape[:2]], force_num=n)
results = []
with torch.inference_mode():
    for n in {persons!r}:
        fn = post(n)
        for _ in range({warmup}):
            fn()
        times = []
        for _ in range({runs}):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        results.append({{"persons": n, "post_ms": {{"median": statistics.median(times)}}}})
print(json.dumps({{"results": results, "contention": {{}}}}))
"""


def run(tree: Path, args) -> dict:
    template = POST_CHILD if args.post_only else CHILD
    code = template.format(config=args.config, size=args.size, persons=tuple(args.persons), runs=args.runs,
                           warmup=args.warmup)
    env = dict(os.environ, PYTHONPATH=str(tree))  # this tree's fcpose first on the path
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="a checkout of the version to compare against")
    p.add_argument("--config", default="fcpose_r50_fpn")
    p.add_argument("--size", type=int, default=800)
    p.add_argument("--persons", type=lambda s: [int(v) for v in s.split(",")], default=[1, 50])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--post-only", action="store_true", help="time the post-processing alone (see above)")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(RESULTS / "cpu_before_after.json"))
    args = p.parse_args(argv)
    trees = {"before": Path(args.base).resolve(), "after": HERE}
    rounds: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in ("before", "after"):
            got = run(trees[name], args)
            rounds[name].append(got)
            key = "post_ms" if args.post_only else "total_ms"
            totals = ", ".join(f"{e['persons']}: {e[key]['median']:.1f} ms" for e in got["results"])
            print(f"round {r + 1} {name}: {totals} (others {got['contention'].get('others_cpu_pct')}% CPU)",
                  file=sys.stderr)
    summary: dict = {}
    for n_index, persons in enumerate(args.persons):
        entry: dict = {}
        for stage in ("post",) if args.post_only else ("total", "network", "nms", "heads"):
            per = {}
            for name in ("before", "after"):
                values = [rd["results"][n_index][f"{stage}_ms"]["median"] for rd in rounds[name]]
                per[name] = {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
                             "rounds": values}
            per["ratio_min"] = round(per["after"]["min"] / per["before"]["min"], 4)
            per["ratio_median"] = round(per["after"]["median"] / per["before"]["median"], 4)
            entry[stage] = per
        summary[str(persons)] = entry
        what = "post" if args.post_only else "total"
        t = entry[what]
        print(f"persons {persons}: {what} before min/median {t['before']['min']}/{t['before']['median']} ms, after "
              f"{t['after']['min']}/{t['after']['median']} ms; after/before = {t['ratio_min']} (min), "
              f"{t['ratio_median']} (median)")
    report = {"note": args.note, "base": str(trees["before"]), "config": args.config, "size": args.size,
              "post_only": args.post_only,
              "runs_per_round": args.runs, "warmup": args.warmup, "rounds": args.rounds, "summary": summary,
              "contention": {name: [rd["contention"] for rd in rounds[name]] for name in rounds}}
    write_json(report, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
