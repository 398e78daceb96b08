"""Time against the number of people from ``bench_people.py`` / ``fcpose bench --json`` reports: a plot, or
(``--tables``) the markdown tables of benchmarks/README.md on stdout.

    python benchmarks/plot_people.py                                  # every people_*.json in results/
    python benchmarks/plot_people.py a.json b.json --out plot.png
    python benchmarks/plot_people.py --tables [a.json ...]

The plot (PIL, no plotting library): median total time per report against the number of people, one coloured
line with dots and a legend entry per report, both axes linear from 0 (the axis ranges are written beside them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22", "#000000", "#aec7e8"]


def load(paths: list[Path]) -> list[dict]:
    series = []
    for path in paths:
        report = json.loads(path.read_text())
        rows = [r for r in report.get("results", []) if isinstance(r.get("persons"), int)]
        if not rows:
            continue
        rows.sort(key=lambda r: r["persons"])
        variant = report.get("variant", "")
        label = f"{report['config']} {variant}" + ("" if report["precision"] in variant else f" {report['precision']}")
        series.append({"label": label, "persons": [r["persons"] for r in rows],
                       "median": [r["total_ms"]["median"] for r in rows], "p90": [r["total_ms"]["p90"] for r in rows],
                       "device": report["machine"].get("device_name", "")})
    return series


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


def plot(series: list[dict], out: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    w, h, m = 900, 500, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xmax = max(max(s["persons"]) for s in series)
    ymax = max(max(s["p90"]) for s in series) * 1.1
    d.rectangle([m, m // 2, w - m // 2, h - m], outline="black")
    for i, s in enumerate(series):
        c = COLORS[i % len(COLORS)]
        pts = [(m + (w - 1.5 * m) * p / xmax, h - m - (h - 1.5 * m) * t / ymax)
               for p, t in zip(s["persons"], s["median"])]
        d.line(pts, fill=c, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
        d.text((m + 10, m // 2 + 10 + 14 * i), s["label"], fill=c)
    d.text((m, 8), title, fill="black")
    d.text((w // 2 - 80, h - m + 25), f"people (0-{xmax})", fill="black")
    d.text((5, h // 2), f"ms (0-{ymax:.0f})", fill="black")
    img.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="*", type=Path, help="report JSONs (default: results/people_*.json)")
    p.add_argument("--out", type=Path, default=RESULTS / "people.png")
    p.add_argument("--tables", action="store_true", help="print the README's markdown tables instead of plotting")
    args = p.parse_args(argv)
    paths = args.reports or sorted(RESULTS.glob("people_*.json"))
    if args.tables:
        return print_tables([json.loads(path.read_text()) for path in paths])
    series = load(paths)
    if not series:
        print("no people reports found", file=sys.stderr)
        return 1
    title = f"FCPose time vs people — {series[0]['device']}"
    plot(series, args.out, title)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def print_tables(reports: list[dict]) -> int:
    """The machine, the people table of every report, the stage tables of the R-50 optimised and reference runs."""
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
    sys.exit(main())
