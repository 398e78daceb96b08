"""Markdown tables of the reports in ``benchmarks/results`` (for the README or an issue comment).

    python benchmarks/summarize.py [results_dir]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def people_table(reports: list[dict]) -> list[str]:
    lines = ["| preset | variant | input | N=1 total ms | N=20 total | N=50 total | 50/1 | heads+NMS @20 | "
             "network ms | GFLOP | net GFLOP/s (% of probe) | peak MB | FPS @1 | others' CPU % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        by_n = {e["persons"]: e for e in r["results"]}
        if 1 not in by_n:
            continue
        first, last = by_n[1], by_n[max(k for k in by_n if isinstance(k, int))]
        mid = by_n.get(20, last)
        s = r.get("summary", {})
        share = s.get("per_person_share", {}).get("20")
        probe = r.get("conv_probe", {}).get("gflops_per_s")
        net = s.get("network_gflops_per_s")
        eff = f"{net:.0f} ({100 * net / probe:.0f}%)" if net and probe else "-"
        lines.append(
            f"| {r['config']} | {r.get('variant', '')} {r['precision']} | "
            f"{r['input_shape'][0]}x{r['input_shape'][1]} | "
            f"{first['total_ms']['median']:.1f} | {mid['total_ms']['median']:.1f} | {last['total_ms']['median']:.1f} | "
            f"{last['total_ms']['median'] / first['total_ms']['median']:.3f} | "
            f"{'-' if share is None else f'{100 * share:.1f}%'} | {s.get('network_ms_median', 0):.1f} | "
            f"{r.get('flops', {}).get('network_gflop', 0):.1f} | {eff} | {last['peak_mem_mb']:.0f} | "
            f"{first['fps']:.2f} | {r.get('contention', {}).get('others_cpu_pct', '-')} |")
    return lines


def stage_table(report: dict) -> list[str]:
    lines = [f"`{report['config']}` {report.get('variant', '')} {report['precision']}, medians (p90) in ms:", "",
             "| people | total | preprocess | network | NMS + selection | heads + decoding | peak MB |",
             "|---|---|---|---|---|---|---|"]
    for e in report["results"]:
        cells = [f"{e[k]['median']:.1f} ({e[k]['p90']:.1f})" for k in
                 ("total_ms", "preprocess_ms", "network_ms", "nms_ms", "heads_ms")]
        lines.append(f"| {e['persons']} | " + " | ".join(cells) + f" | {e['peak_mem_mb']:.0f} |")
    return lines


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else RESULTS
    reports = [json.loads(p.read_text()) for p in sorted(root.glob("people_*.json"))]
    if reports:
        m = reports[0]["machine"]
        print(f"Machine: {m['device_name']}, {m['usable_cpus']} CPUs, torch {m['torch']} "
              f"({m['torch_threads']} threads), flags {' '.join(m['cpu_flags'])}\n")
        print("\n".join(people_table(reports)) + "\n")
        for r in reports:
            if r.get("variant") in ("optimized", "reference") and r["config"] == "fcpose_r50_fpn":
                print("\n".join(stage_table(r)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
