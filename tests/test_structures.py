"""`PoseDetections`: the people the command line counts (`people()`), selection and numpy views."""

import re

import numpy as np
import pytest
import torch

from fcpose.assets import DEMO_MODEL, asset
from fcpose.assets import SCENE as SCENE_FILE
from fcpose.cli import main
from fcpose.config import COCO_SIGMAS
from fcpose.ops.oks import pose_nms
from fcpose.structures import PoseDetections

DEMO = asset(DEMO_MODEL)
SCENE = asset(SCENE_FILE)


def _crowd() -> PoseDetections:
    """Three people and a second detection of the first (keypoints ~1 px apart), plus a low-scored one."""
    gen = torch.Generator().manual_seed(0)
    person = torch.rand(17, 2, generator=gen) * torch.tensor([40.0, 100.0]) + torch.tensor([10.0, 10.0])
    same = person + torch.randn(17, 2, generator=gen)
    other = person + torch.tensor([45.0, 0.0])
    far = person + torch.tensor([120.0, 0.0])
    kps = torch.cat([torch.stack([same, person, other, far]), torch.ones(4, 17, 1)], dim=2)
    boxes = torch.tensor([[8.0, 12, 52, 108], [10, 10, 50, 110], [55, 10, 95, 110], [130, 10, 170, 110]])
    return PoseDetections(boxes=boxes, scores=torch.tensor([0.5, 0.9, 0.8, 0.1]), keypoints=kps,
                          image_size=(200, 300), levels=torch.tensor([0, 0, 1, 2]),
                          locations=torch.rand(4, 2, generator=gen))


def test_people_applies_the_threshold_and_removes_duplicates():
    dets = _crowd()
    people = dets.people()  # score >= 0.3, OKS > 0.5 to a better-scored person removed
    assert isinstance(people, PoseDetections) and len(people) == 2
    assert people.scores.tolist() == pytest.approx([0.9, 0.8])  # best first; the duplicate (0.5) and 0.1 gone
    torch.testing.assert_close(people.keypoints, dets.keypoints[[1, 2]])
    torch.testing.assert_close(people.levels, torch.tensor([0, 1]))
    assert people.image_size == dets.image_size
    assert len(dets.people(nms=1.0)) == 3  # 1 keeps duplicates
    assert len(dets.people(threshold=0.0)) == 3 and len(dets.people(threshold=0.0, nms=1.0)) == 4
    assert len(dets.people(threshold=0.95)) == 0
    assert len(PoseDetections.empty(17).people()) == 0


def test_people_and_pose_nms_are_one_implementation():
    dets = _crowd()
    keep = pose_nms(dets.boxes, dets.scores, dets.keypoints, COCO_SIGMAS, 0.5)
    assert keep.tolist() == [1, 2, 3]  # best first; the duplicate of person 1 dropped
    torch.testing.assert_close(dets.people(threshold=0.0).boxes, dets.boxes[keep])


def test_people_needs_the_sigmas_of_other_keypoint_sets():
    dets = _crowd()
    five = PoseDetections(boxes=dets.boxes, scores=dets.scores, keypoints=dets.keypoints[:, :5])
    with pytest.raises(ValueError, match="give the OKS sigmas of these 5 keypoints"):
        five.people()
    assert len(five.people(sigmas=COCO_SIGMAS[:5])) == 2
    assert len(five.people(nms=1.0)) == 3  # no de-duplication: no sigmas needed


def test_index_and_numpy():
    dets = _crowd()
    sub = dets.index(torch.tensor([True, False, True, False]))
    assert sub.scores.tolist() == pytest.approx([0.5, 0.8]) and sub.locations.shape == (2, 2)
    arrays = dets.index([3, 0]).numpy()
    assert set(arrays) == {"boxes", "scores", "keypoints"}
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert arrays["keypoints"].shape == (2, 17, 3) and arrays["scores"].tolist() == pytest.approx([0.1, 0.5])


def test_people_is_what_predict_counts(tmp_path, capsys):
    import fcpose

    assert main(["predict", str(SCENE), "--weights", str(DEMO), "--out", str(tmp_path / "out"), "--no-progress",
                 "--no-render"]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    counted = int(re.match(r"sample\.jpg: (\d+) (?:person|people) \(score >= 0\.3\)", line).group(1))
    predictor = fcpose.Predictor.from_checkpoint(DEMO)
    dets = predictor(SCENE)
    assert counted > 0 and len(dets) > counted  # every detection above 0.05, duplicates included
    assert len(dets.people()) == counted
    assert len(dets.people(sigmas=predictor.cfg.keypoints.sigmas)) == counted
