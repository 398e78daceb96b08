"""``fcpose demo`` (also ``python -m fcpose.demo``, ``make demo``): show the real thing when it can.

With network access (or the file already in the cache) it runs the authors' COCO model (``fcpose_r50_official``,
downloaded by the model zoo) on a COCO val2017 photo bundled in :mod:`fcpose.assets` (licence and attribution:
``fcpose/assets/README.md``). Offline it falls back to the bundled small model trained on synthetic scenes only
(``fcpose_synth_demo``) on a synthetic scene. One line says which it used and why. ``--weights W`` skips the
choice: W runs on the photo (the synthetic demo model on the synthetic scene). Works from any folder of any install."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import assets
from .errors import CheckpointError, FCPoseError, one_line

OFFICIAL = "fcpose_r50_official"
SYNTH_MODEL = "fcpose_synth_demo"


def choose(weights: str | None = None) -> tuple[str, Path, str]:
    """(weights, image, the line that says which and why)."""
    photo, scene = assets.asset(assets.PHOTO), assets.asset(assets.SCENE)
    if weights is not None:
        synthetic = weights == SYNTH_MODEL or Path(weights).resolve() == assets.asset(assets.DEMO_MODEL).resolve()
        image = scene if synthetic else photo
        return weights, image, f"demo: --weights {weights} on {image.name} (chosen by you)"
    from .weights.zoo import fetch

    try:
        fetch(OFFICIAL)
    except CheckpointError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return (SYNTH_MODEL, scene,
                f"demo: the official COCO weights ({OFFICIAL}) could not be downloaded ({reason}), so this is "
                f"the small model trained on synthetic scenes only, on a synthetic scene; with internet access "
                f"(or the file in the cache, see the README) the demo runs the COCO model on a real photo")
    return (OFFICIAL, photo, f"demo: the authors' COCO model ({OFFICIAL}) on a COCO val2017 photo ({photo.name}; "
                             f"licence and attribution in fcpose/assets/README.md)")


DESCRIPTION = ("What fcpose demo (make demo) runs: the authors' COCO model on a COCO photo when its weights can be "
               "downloaded (or are cached), else the small model trained on synthetic scenes on a synthetic scene; "
               "one line says which and why. Writes OUT/predictions.json and the image with the skeletons drawn.")


def remove_earlier_renderings(out: Path, image: Path) -> list[Path]:
    """Delete the renderings an earlier demo run left in ``out`` for the *other* demo image (this run's
    rendering and ``predictions.json`` were just replaced), so ``out`` holds this run's outputs only.
    Only the files the demo itself writes are touched. Returns the files removed."""
    removed = []
    for other in (assets.PHOTO, assets.SCENE):
        stale = out / f"{Path(other).stem}.jpg"
        if other != image.name and stale.is_file():
            stale.unlink()
            removed.append(stale)
    return removed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``fcpose demo`` and ``python -m fcpose.demo``."""
    parser.add_argument("--out", default="demo_out",
                        help="output folder (default demo_out); a rendering an earlier demo run left there is removed")
    parser.add_argument("--weights", default=None,
                        help="run these weights instead of choosing (default: official if downloadable)")


def run_demo(out: str, weights: str | None = None) -> int:
    """Choose, say which and why, predict into ``out``; returns the exit status (errors raise FCPoseError)."""
    from .inference.predict_command import run_predict

    weights, image, line = choose(weights)
    print(line, file=sys.stderr)
    code = run_predict([str(image)], weights, out, progress=False, warmup=True)
    for stale in remove_earlier_renderings(Path(out), image):
        print(f"removed {stale} (an earlier demo run's rendering of another image)", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcpose.demo", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_demo(args.out, args.weights)
    except FCPoseError as exc:
        print(f"fcpose demo: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcpose demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
