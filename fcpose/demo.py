"""``make demo`` (``python -m fcpose.demo --out demo_out``): show the real thing when it can.

With network access (or the file already in the cache) it runs the authors' COCO model
(``fcpose_r50_official``, downloaded by the model zoo) on a COCO val2017 photo bundled in ``assets/``
(licence and attribution: ``assets/README.md``). Offline it falls back to the small model trained on
synthetic scenes only (``assets/fcpose_synth_demo.pt``) on a synthetic scene (``assets/sample.jpg``).
One line says which it used and why. ``--weights W`` skips the choice: W runs on the photo (the synthetic
demo model on the synthetic scene).
"""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcpose.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--weights", default=None,
                        help="run these weights instead of choosing (default: official if downloadable)")
    args = parser.parse_args(argv)
    from .inference.predict_command import run_predict

    try:
        weights, image, line = choose(args.weights)
        print(line, file=sys.stderr)
        return run_predict([str(image)], weights, args.out, progress=False)
    except FCPoseError as exc:
        print(f"fcpose demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcpose demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
