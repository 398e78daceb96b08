"""Tests for the training targets: FCOS assignment, keypoint targets and the sampling of dynamic heads."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import decode_keypoint_targets, decode_target_boxes

from fcpose.targets.boxes import decode_ltrb
from fcpose.targets.fcos import (
    assign_fcos_targets,
    centerness_from_ltrb,
    level_size_ranges,
    location_grid,
)
from fcpose.targets.keypoints import decode_offsets, encode_heatmap_index
from fcpose.targets.locations import compute_locations
from fcpose.targets.pose import assign_keypoint_targets, sample_instances

STRIDES = [8, 16, 32, 64, 128]
SOI = [64, 128, 256, 512]
SIZE = 256  # input side: P3 32x32 ... P7 2x2


def _grid(strides=STRIDES, size=SIZE):
    return location_grid([(size // s, size // s) for s in strides], strides)


def _assign(boxes, ignore=None, radius=1.5, strides=STRIDES, soi=SOI, size=SIZE):
    grid = _grid(strides, size)
    gt = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    ign = None if ignore is None else [torch.tensor(i, dtype=torch.float32).reshape(-1, 4) for i in ignore]
    t = assign_fcos_targets(list(grid.locations.split(grid.num_per_level)), strides, soi, gt, ign, radius)
    return grid, t


def test_size_ranges_and_layout():
    assert level_size_ranges([64, 128, 256, 512], 5) == [(-1, 64), (64, 128), (128, 256), (256, 512),
                                                         (512, math.inf)]
    assert level_size_ranges([64, 128], 3) == [(-1, 64), (64, 128), (128, math.inf)]
    with pytest.raises(ValueError):
        level_size_ranges([64], 3)
    grid = _grid()
    assert grid.num_per_level == [1024, 256, 64, 16, 4] and len(grid) == 1364
    # Level-major, then row-major; the same cells as compute_locations.
    torch.testing.assert_close(grid.locations[1024:1280], compute_locations(16, 16, 16))
    assert grid.levels[1023] == 0 and grid.levels[1024] == 1
    assert grid.positions[33].tolist() == [1, 1] and grid.locations[33].tolist() == [12.0, 12.0]


def test_small_box_is_positive_on_p3_only_with_centre_sampling():
    grid, t = _assign([[[40.0, 40.0, 100.0, 100.0]]])
    assert t.labels.shape == (1, 1364) and t.box_targets.shape == (1, 1364, 4)
    pos = t.positive[0]
    assert set(grid.levels[pos].tolist()) == {0}
    # Centre (70, 70) +- 1.5 * 8: cells at 60, 68, 76 in x and y.
    xs = sorted(set(grid.locations[pos][:, 0].tolist()))
    assert xs == [60.0, 68.0, 76.0] and int(pos.sum()) == 9
    assert (t.labels[0][pos] == 0).all() and (t.labels[0][~pos] == -1).all()
    assert (t.matched_gt[0][pos] == 0).all() and (t.matched_gt[0][~pos] == -1).all()
    # Without centre sampling every cell strictly inside the box: 44 ... 92 -> 7 x 7.
    _, t0 = _assign([[[40.0, 40.0, 100.0, 100.0]]], radius=0.0)
    assert int(t0.positive.sum()) == 49


def test_centre_region_is_clipped_to_the_box():
    grid, t = _assign([[[64.0, 20.0, 70.0, 120.0]]])  # 6 px wide: only x = 68 is inside
    pos = t.positive[0]
    assert set(grid.locations[pos][:, 0].tolist()) == {68.0}
    assert set(grid.locations[pos][:, 1].tolist()) == {60.0, 68.0, 76.0}


def test_large_box_goes_to_a_coarser_level():
    # 200 x 200 box centred at (128, 128): from the centre cells the largest distance is ~100 -> P4 [64, 128].
    grid, t = _assign([[[28.0, 28.0, 228.0, 228.0]]])
    pos = t.positive[0]
    assert set(grid.levels[pos].tolist()) == {1}
    extent = t.box_targets[0][pos].max(-1).values
    assert (extent >= 64).all() and (extent <= 128).all()


def test_ambiguous_location_takes_the_smaller_box():
    small, big = [76.0, 76.0, 124.0, 124.0], [60.0, 60.0, 140.0, 140.0]
    for boxes, small_index in (([small, big], 0), ([big, small], 1)):
        grid, t = _assign([boxes])
        at = ((grid.locations == torch.tensor([100.0, 100.0])).all(1) & (grid.levels == 0)).nonzero().item()
        assert t.matched_gt[0, at] == small_index
        torch.testing.assert_close(t.box_targets[0, at], torch.tensor([24.0, 24.0, 24.0, 24.0]))
        assert t.centerness_targets[0, at] == 1.0


def test_box_targets_round_trip_and_centerness():
    boxes = [[10.3, 20.7, 60.1, 90.2], [100.0, 30.0, 250.0, 240.0], [5.0, 150.0, 30.0, 200.0]]
    grid, t = _assign([boxes])
    pos = t.positive[0]
    assert pos.any()
    decoded = decode_target_boxes(t, grid.locations)[0][pos]
    expected = torch.tensor(boxes)[t.matched_gt[0][pos]]
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(decode_ltrb(grid.locations[pos], t.box_targets[0][pos]), expected, rtol=0, atol=1e-4)
    ltrb = t.box_targets[0][pos]
    manual = torch.sqrt(torch.minimum(ltrb[:, 0], ltrb[:, 2]) / torch.maximum(ltrb[:, 0], ltrb[:, 2])
                        * torch.minimum(ltrb[:, 1], ltrb[:, 3]) / torch.maximum(ltrb[:, 1], ltrb[:, 3]))
    torch.testing.assert_close(t.centerness_targets[0][pos], manual)
    assert (t.centerness_targets[0][~pos] == 0).all() and (t.box_targets[0][~pos] == 0).all()
    assert centerness_from_ltrb(torch.tensor([[1.0, 1.0, 3.0, 1.0]])).item() == pytest.approx(math.sqrt(1 / 3))


def test_ignore_regions_and_empty_images():
    crowd = [[0.0, 0.0, 50.0, 50.0], [36.0, 36.0, 104.0, 104.0]]
    grid, t = _assign([[[40.0, 40.0, 100.0, 100.0]], []], ignore=[crowd, crowd])
    assert t.labels.shape == (2, 1364)
    inside = (grid.locations[:, None, :] > torch.tensor(crowd)[None, :, :2]).all(-1) & \
        (grid.locations[:, None, :] < torch.tensor(crowd)[None, :, 2:]).all(-1)
    inside = inside.any(1)
    pos = t.positive[0]
    assert torch.equal(t.ignore[0], inside & ~pos)  # positives win over the crowd box
    assert not (t.ignore[0] & pos).any() and pos.sum() == 9
    # Image 1: no people at all -> every location background, the crowd still ignored.
    assert (t.labels[1] == -1).all() and (t.matched_gt[1] == -1).all() and torch.equal(t.ignore[1], inside)
    assert torch.isfinite(t.box_targets).all() and torch.isfinite(t.centerness_targets).all()
    _, t2 = _assign([[]])
    assert not t2.positive.any() and not t2.ignore.any()


def test_three_level_pyramid():
    grid, t = _assign([[[10.0, 10.0, 310.0, 310.0]]], strides=[8, 16, 32], soi=[64, 128], size=320)
    assert set(grid.levels[t.positive[0]].tolist()) == {2}  # farther than 128 from every side -> the last level


# ----------------------------------------------------------------------------------------------
# Keypoint targets
# ----------------------------------------------------------------------------------------------
def test_heatmap_index_is_floor_x_minus_4_over_8():
    gen = torch.Generator().manual_seed(0)
    kp = torch.zeros(2, 17, 3)
    kp[..., 0] = 4 + torch.rand(2, 17, generator=gen) * 240
    kp[..., 1] = 4 + torch.rand(2, 17, generator=gen) * 180
    kp[..., 2] = 2
    kp[0, 3, 2] = 0
    kt = assign_keypoint_targets([kp[:1], kp[1:]], 24, 32, 8)
    cols = torch.floor((kp[..., 0] - 4) / 8).long()
    rows = torch.floor((kp[..., 1] - 4) / 8).long()
    assert torch.equal(kt.heatmap_index, rows * 32 + cols)
    assert torch.equal(kt.heatmap_index, encode_heatmap_index(kp[..., :2], 8, 24, 32))
    assert kt.heatmap_valid.sum() == 33 and not kt.heatmap_valid[0, 3]
    assert kt.gt_image.tolist() == [0, 1] and kt.gt_start.tolist() == [0, 1]
    assert kt.offset_targets.shape == (2, 34, 24, 32) and kt.offset_weights.shape == (2, 17, 24, 32)
    # Exact values at the cell boundaries.
    edge = torch.tensor([[[4.0, 4.0, 2], [11.999, 12.0, 2], [12.0, 19.99, 2]]])
    kt = assign_keypoint_targets([edge], 10, 10, 8)
    assert kt.heatmap_index[0].tolist() == [0, 1 * 10 + 0, 1 * 10 + 1]


@pytest.mark.parametrize("unit", ["stride", "pixel"])
def test_keypoint_targets_round_trip(unit):
    # Two people far apart: each keypoint's own cell is supervised by that keypoint.
    gen = torch.Generator().manual_seed(1)
    kp = torch.zeros(3, 5, 3)
    for g, (x0, y0) in enumerate([(10, 10), (150, 20), (60, 120)]):
        kp[g, :, 0] = x0 + torch.arange(5) * 7 + torch.rand(5, generator=gen) * 3
        kp[g, :, 1] = y0 + torch.rand(5, generator=gen) * 40
        kp[g, :, 2] = torch.tensor([2, 1, 0, 2, 2])
    kp[kp[..., 2] == 0] = 0
    kt = assign_keypoint_targets([kp[:2], kp[2:], kp[:0]], 24, 32, 8, unit)
    assert kt.gt_image.tolist() == [0, 0, 1] and kt.gt_start.tolist() == [0, 2, 3]
    assert kt.offset_weights[2].sum() == 0  # the empty image
    decoded = decode_keypoint_targets(kt, 8, unit)
    lab = kp[..., 2] > 0
    torch.testing.assert_close(decoded[..., :2][lab], kp[..., :2][lab], rtol=0, atol=1e-4)
    assert torch.equal(decoded[..., 2] > 0, lab)
    # The targets are offsets from the cell centres, in the unit.
    scale = 8.0 if unit == "stride" else 1.0
    idx = kt.heatmap_index[0, 0]
    off = kt.offset_targets[0, 0:2].flatten(1)[:, idx]
    torch.testing.assert_close(decode_offsets(idx, off, 32, 8, unit), kp[0, 0, :2])
    assert off.abs().max() < 8.0 / scale * 1.01


# ----------------------------------------------------------------------------------------------
# Sampling of the locations that generate dynamic heads
# ----------------------------------------------------------------------------------------------
def test_sampling_spreads_evenly_and_takes_the_best():
    gen = torch.Generator().manual_seed(0)
    groups = torch.arange(3).repeat_interleave(40)[torch.randperm(120, generator=gen)]
    scores = torch.rand(120, generator=gen)
    sel = sample_instances(groups, scores, 50)
    assert sel.numel() == 50 and sel.unique().numel() == 50
    counts = torch.bincount(groups[sel], minlength=3)
    assert sorted(counts.tolist()) == [16, 17, 17]
    for g in range(3):
        mine = (groups == g).nonzero().squeeze(1)
        best = mine[scores[mine].argsort(descending=True)[: counts[g]]]
        assert set(sel[groups[sel] == g].tolist()) == set(best.tolist())


def test_sampling_redistributes_and_gives_everyone_one():
    groups = torch.tensor([0] * 2 + [1] * 100 + [2] * 100)
    scores = torch.linspace(0, 1, 202)
    counts = torch.bincount(groups[sample_instances(groups, scores, 50)], minlength=3)
    assert counts.tolist() == [2, 24, 24]
    # Fewer positives than M: all of them.
    assert sample_instances(groups[:30], scores[:30], 50).numel() == 30
    # More people than M: one each (the best one).
    groups = torch.arange(60).repeat_interleave(2)
    scores = torch.rand(120, generator=torch.Generator().manual_seed(2))
    sel = sample_instances(groups, scores, 50)
    assert sel.numel() == 60 and torch.equal(groups[sel].sort().values, torch.arange(60))
    assert torch.equal(scores[sel].sort().values, scores.view(60, 2).max(1).values.sort().values)
    assert sample_instances(torch.zeros(0, dtype=torch.long), torch.zeros(0), 50).numel() == 0


def _select_heads_reference(groups, images, scores, max_proposals):
    """The official selection written as the official loop (image by image, person by person, top-k)."""
    num = int(groups.max()) + 1
    k = max(max_proposals // num, 1)
    keep, counts = [], []
    for image in torch.unique(images).tolist():
        in_image = (images == image).nonzero().squeeze(1)
        for person in torch.unique(groups[in_image]).tolist():
            sel = in_image[groups[in_image] == person]
            if sel.numel() > k:
                sel = sel[torch.sort(scores[sel], descending=True, stable=True).indices[:k]]
            keep.append(sel)
            counts.append(torch.full((sel.numel(),), sel.numel(), dtype=torch.long))
    return torch.cat(keep), torch.cat(counts)


@pytest.mark.parametrize("seed", range(20))
def test_select_heads_per_person_equals_the_official_loop(seed):
    """The vectorised selection (no loop over people) gives the official loop's heads in its order; ties keep the
    positive order."""
    from fcpose.targets.pose import select_heads_per_person

    gen = torch.Generator().manual_seed(seed)
    people_per_image = torch.randint(1, 6, (3,), generator=gen)
    owner = torch.repeat_interleave(torch.arange(3), people_per_image)  # image of each person
    p = int(torch.randint(1, 80, (1,), generator=gen))
    groups = torch.sort(torch.randint(0, len(owner), (p,), generator=gen)).values  # positives: image-major
    groups = groups[torch.randperm(p, generator=gen)]
    groups = groups[torch.argsort(owner[groups], stable=True)]  # image-major, people mixed within an image
    images = owner[groups]
    scores = torch.rand(p, generator=gen)
    if seed % 4 == 0:
        scores = (scores * 4).floor() / 4  # many ties
    for m in (1, 7, 50, 1000):
        ours = select_heads_per_person(groups, images, scores, m)
        ref = _select_heads_reference(groups, images, scores, m)
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), (seed, m)
