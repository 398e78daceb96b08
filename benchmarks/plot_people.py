"""Plot end-to-end time against the number of people from ``bench_people.py`` / ``fcpose bench --json`` reports.

    python benchmarks/plot_people.py                                  # every people_*.json in results/
    python benchmarks/plot_people.py a.json b.json --out plot.png

Left: median total time (band: p90) per report; right: the same relative to the fewest people, the
paper's Fig. 6 flatness (dashed: the 1.05 target). Uses matplotlib when installed, else a plain PIL chart.
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


def plot_matplotlib(series: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rel) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, s in enumerate(series):
        c = COLORS[i % len(COLORS)]
        ax.plot(s["persons"], s["median"], "o-", color=c, label=s["label"])
        ax.fill_between(s["persons"], s["median"], s["p90"], color=c, alpha=0.15)
        rel.plot(s["persons"], [m / s["median"][0] for m in s["median"]], "o-", color=c, label=s["label"])
    ax.set(xlabel="people in the image (forced through the dynamic heads)", yscale="log",
           ylabel="end-to-end time per image (ms, median; band to p90)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    rel.axhline(1.05, color="gray", linestyle="--", linewidth=1)
    rel.set(xlabel="people in the image", ylabel="time / time with the fewest people")
    rel.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_pil(series: list[dict], out: Path, title: str) -> None:
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
    args = p.parse_args(argv)
    paths = args.reports or sorted(RESULTS.glob("people_*.json"))
    series = load(paths)
    if not series:
        print("no people reports found", file=sys.stderr)
        return 1
    title = f"FCPose time vs people — {series[0]['device']}"
    try:
        plot_matplotlib(series, args.out, title)
    except ImportError:
        plot_pil(series, args.out, title)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
