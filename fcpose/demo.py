"""``make demo`` (``python -m fcpose.demo --out demo_out``): show the real thing when it can.

With network access (or the file already in the cache) it runs the authors' COCO model (``fcpose_r50_official``,
downloaded by the model zoo) on a COCO val2017 photo bundled in ``assets/`` (licence and attribution:
``assets/README.md``). Offline it falls back to the small model trained on synthetic scenes only
(``assets/fcpose_synth_demo.pt``) on a synthetic scene (``assets/sample.jpg``). One line says which it used and why.
``--weights W`` skips the choice: W runs on the photo (the synthetic demo model on the synthetic scene)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CheckpointError, FCPoseError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PHOTO = ASSETS / "coco_val2017_000000000785.jpg"
SCENE = ASSETS / "sample.jpg"
SYNTH_MODEL = ASSETS / "fcpose_synth_demo.pt"
OFFICIAL = "fcpose_r50_official"


def choose(weights: str | None = None) -> tuple[str, Path, str]:
    """(weights, image, the line that says which and why)."""
    if weights is not None:
        synthetic = Path(weights).resolve() == SYNTH_MODEL.resolve()
        image = SCENE if synthetic else PHOTO
        return weights, image, f"demo: --weights {weights} on {image.name} (chosen by you)"
    from .weights.zoo import fetch

    try:
        fetch(OFFICIAL)
    except CheckpointError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return (str(SYNTH_MODEL), SCENE,
                f"demo: the official COCO weights ({OFFICIAL}) could not be downloaded ({reason}), so this is "
                f"the small model trained on synthetic scenes only, on a synthetic scene; with internet access "
                f"(or the file in the cache, see the README) the demo runs the COCO model on a real photo")
    return (OFFICIAL, PHOTO, f"demo: the authors' COCO model ({OFFICIAL}) on a COCO val2017 photo ({PHOTO.name}; "
                             f"licence and attribution in assets/README.md)")


DESCRIPTION = ("What make demo runs: the authors' COCO model on a COCO photo when its weights can be downloaded (or "
               "are cached), else the small model trained on synthetic scenes on a synthetic scene; one line says "
               "which and why. Writes OUT/predictions.json and the image with the skeletons drawn.")


def remove_earlier_renderings(out: Path, image: Path) -> list[Path]:
    """Delete the renderings an earlier demo run left in ``out`` for the *other* demo image (this run's
    rendering and ``predictions.json`` were just replaced), so ``out`` holds this run's outputs only.
    Only the files the demo itself writes are touched. Returns the files removed."""
    removed = []
    for other in (PHOTO, SCENE):
        stale = out / f"{other.stem}.jpg"
        if other.resolve() != image.resolve() and stale.is_file():
            stale.unlink()
            removed.append(stale)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcpose.demo", description=DESCRIPTION)
    parser.add_argument("--out", default="demo_out",
                        help="output folder (default demo_out); a rendering an earlier demo run left there is removed")
    parser.add_argument("--weights", default=None,
                        help="run these weights instead of choosing (default: official if downloadable)")
    args = parser.parse_args(argv)
    from .inference.predict_command import run_predict

    try:
        weights, image, line = choose(args.weights)
        print(line, file=sys.stderr)
        code = run_predict([str(image)], weights, args.out, progress=False, warmup=True)
    except FCPoseError as exc:
        print(f"fcpose demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcpose demo: interrupted", file=sys.stderr)
        return 130
    for stale in remove_earlier_renderings(Path(args.out), image):
        print(f"removed {stale} (an earlier demo run's rendering of another image)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
