"""Files that ship inside the package (``README.md`` here says what each one is, where it comes from and its
licence). They are found through :mod:`importlib.resources`, so they work from any install, not only a checkout."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import FCPoseError

DEMO_MODEL = "fcpose_synth_demo.pt"  # the small model trained on synthetic scenes (zoo name: fcpose_synth_demo)
SCENE = "sample.jpg"  # a synthetic scene for it
PHOTO = "coco_val2017_000000000785.jpg"  # a COCO val2017 photo (CC BY 2.0) for the official COCO models


def asset(name: str) -> Path:
    """The path of the bundled file ``name``; one error line when the install lacks it."""
    path = files(__name__) / name
    if not isinstance(path, Path) or not path.is_file():
        raise FCPoseError(f"the bundled file {name} is missing from fcpose's install ({files(__name__)}); "
                          f"reinstall fcpose")
    return path
