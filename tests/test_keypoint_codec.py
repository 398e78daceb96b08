import math

import torch
from helpers import decode_heatmap_peaks, encode_offsets

from fcpose.targets.boxes import decode_ltrb, encode_ltrb
from fcpose.targets.keypoints import (
    decode_offsets,
    encode_heatmap_index,
    encode_offset_maps,
    gather_offsets,
)
from fcpose.targets.locations import compute_locations, flat_to_locations


def test_heatmap_cell_is_floor_x_minus_4_over_8():
    xs = torch.tensor([0.0, 3.99, 4.0, 11.99, 12.0, 100.5, 799.0])
    idx = encode_heatmap_index(torch.stack([xs, xs], dim=1), stride=8, height=1000, width=1000)
    cols = idx % 1000
    assert cols.tolist() == [max(0, math.floor((x - 4) / 8)) for x in xs.tolist()]
    # Clamped to the grid.
    idx = encode_heatmap_index(torch.tensor([[1000.0, -50.0]]), stride=8, height=5, width=7)
    assert idx.tolist() == [0 * 7 + 6]


def test_offsets_round_trip_exact():
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(50, 17, 2, generator=gen) * torch.tensor([400.0, 300.0])
    for unit in ("stride", "pixel"):
        idx = encode_heatmap_index(xy, 8, 38, 50)
        off = encode_offsets(xy, idx, 50, 8, unit)
        torch.testing.assert_close(decode_offsets(idx, off, 50, 8, unit), xy, rtol=0, atol=1e-4)
    off = encode_offsets(xy, encode_heatmap_index(xy, 8, 38, 50), 50, 8, "stride")
    inner = (xy >= 4).all(-1)  # away from the clamped top/left border
    assert off[inner].min() >= 0 and off[inner].max() < 1  # the floor cell is at or before the keypoint
    assert off[~inner].min() < 0  # border keypoints map to cell 0 with a negative offset


def test_decode_hand_made_heatmaps_exact_coordinates():
    h, w, s = 6, 10, 8
    heat = torch.full((2, 3, h, w), -5.0)
    peaks = [[(1, 2), (5, 9), (0, 0)], [(3, 4), (2, 7), (4, 1)]]  # (row, col) per instance and keypoint
    for n, per in enumerate(peaks):
        for k, (r, c) in enumerate(per):
            heat[n, k, r, c] = 3.0
    offsets = torch.zeros(1, 6, h, w)
    offsets[0, 0, 3, 4] = 0.5    # dx of keypoint 0 at cell (3, 4)
    offsets[0, 1, 3, 4] = -0.25  # dy
    offsets[0, 2, 2, 7] = 1.0    # keypoint 1 at cell (2, 7): dx
    idx, score = decode_heatmap_peaks(heat, "softmax")
    assert idx.tolist() == [[r * w + c for r, c in per] for per in peaks]
    expected = 1.0 / (1.0 + (h * w - 1) * math.exp(-8.0))
    assert torch.allclose(score, torch.full((2, 3), expected))
    _, logit = decode_heatmap_peaks(heat, "logit")
    assert torch.all(logit == 3.0)
    off = gather_offsets(offsets, torch.tensor([0, 0]), idx)
    xy = decode_offsets(idx, off, w, s, "stride")
    # instance 0 keypoint 0: cell (1, 2) -> centre (2*8+4, 1*8+4) = (20, 12), no offset
    assert xy[0, 0].tolist() == [20.0, 12.0]
    assert xy[0, 1].tolist() == [9 * 8 + 4.0, 5 * 8 + 4.0]
    # instance 1 keypoint 0: cell (3, 4) -> (36, 28) + (0.5, -0.25) * 8
    assert xy[1, 0].tolist() == [36.0 + 4.0, 28.0 - 2.0]
    assert xy[1, 1].tolist() == [7 * 8 + 4.0 + 8.0, 2 * 8 + 4.0]


def test_dense_offset_targets_point_to_nearest_keypoint():
    kp = torch.tensor([[[20.0, 20.0, 2.0], [0.0, 0.0, 0.0]],
                       [[60.0, 20.0, 2.0], [44.0, 30.0, 1.0]]])  # G=2 people, K=2
    targets, weights = encode_offset_maps(kp, 6, 10, 8, "stride", radius=2.0)
    assert targets.shape == (4, 6, 10) and weights.shape == (2, 6, 10)
    centres = flat_to_locations(torch.arange(60), 10, 8).reshape(6, 10, 2)
    for r in range(6):
        for c in range(10):
            cx, cy = centres[r, c].tolist()
            d1 = math.hypot(20 - cx, 20 - cy)
            d2 = math.hypot(60 - cx, 20 - cy)
            near = min(d1, d2)
            assert bool(weights[0, r, c]) == (near <= 16.0)
            if near <= 16.0:
                tx = (20 if d1 <= d2 else 60) - cx
                assert math.isclose(float(targets[0, r, c]) * 8, tx, abs_tol=1e-4)
    # Keypoint 1 only labelled for person 2 (v=1 still counts as labelled).
    assert weights[1].sum() > 0 and targets[2][weights[1] > 0].abs().max() <= 2.0


def test_boxes_round_trip_and_locations():
    loc = compute_locations(3, 4, 16)
    assert loc[:5].tolist() == [[8, 8], [24, 8], [40, 8], [56, 8], [8, 24]]
    boxes = torch.tensor([[0.0, 0.0, 50.0, 40.0]]).expand(12, 4)
    torch.testing.assert_close(decode_ltrb(loc, encode_ltrb(loc, boxes)), boxes)
