import torch
from helpers import generalized_box_iou_pairs

from fcpose.ops.boxes import box_iou, clip_boxes, nms


def brute_force_nms(boxes, scores, threshold):
    """The textbook greedy loop: take the best remaining box, drop the ones overlapping it too much."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    remaining = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [j for j in remaining if iou(boxes[best], boxes[j]) <= threshold]
    return keep


def random_boxes(n, gen, spread=200.0):
    xy = torch.rand(n, 2, generator=gen) * spread
    wh = torch.rand(n, 2, generator=gen) * 60 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_nms_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = int(torch.randint(1, 300, (1,), generator=gen))
        boxes = random_boxes(n, gen, spread=100.0 if trial % 2 else 400.0)
        scores = torch.rand(n, generator=gen)
        for t in (0.3, 0.5, 0.6, 0.8):
            got = nms(boxes, scores, t).tolist()
            assert got == brute_force_nms(boxes.tolist(), scores.tolist(), t)


def test_nms_long_suppression_chain_and_blocks():
    # A chain where box i overlaps only i-1 and i+1: greedy keeps every other box.
    n = 2500
    x = torch.arange(n, dtype=torch.float32) * 5.0
    boxes = torch.stack([x, torch.zeros(n), x + 10.0, torch.full((n,), 10.0)], dim=1)
    scores = torch.linspace(1.0, 0.1, n)
    keep = nms(boxes, scores, 0.3)
    assert keep.tolist() == list(range(0, n, 2))


def test_nms_empty_and_single():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_iou_and_giou():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 0, 15, 10]])
    iou = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[50 / 150], [0.0]]))
    g = generalized_box_iou_pairs(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 0, 30, 10]]))
    assert torch.allclose(g, torch.tensor([0.0 - (300 - 200) / 300]), atol=1e-6)


def test_clip_boxes_per_box_limits():
    boxes = torch.tensor([[-5.0, -5, 50, 50], [10, 10, 200, 300]])
    out = clip_boxes(boxes, torch.tensor([40.0, 100.0]), torch.tensor([30.0, 150.0]))
    assert out.tolist() == [[0, 0, 30, 40], [10, 10, 150, 100]]
