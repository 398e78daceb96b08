import torch
import torch.nn.functional as F

from fcpose.model.dynamic_head import DynamicKeypointHead


def grouped_conv_reference(feats, params, batch_index, locations, norms, head):
    """Per-instance inputs [rel_x, rel_y, F] built explicitly and run as one grouped 1x1 conv per layer
    (the formulation of the official implementation)."""
    b, c, h, w = feats.shape
    n = params.shape[0]
    ys = torch.arange(h, dtype=torch.float32) * head.stride + head.stride // 2
    xs = torch.arange(w, dtype=torch.float32) * head.stride + head.stride // 2
    inputs = []
    for i in range(n):
        rel_x = (locations[i, 0] - xs[None, :].expand(h, w)) / norms[i]
        rel_y = (locations[i, 1] - ys[:, None].expand(h, w)) / norms[i]
        inputs.append(torch.cat([rel_x[None], rel_y[None], feats[batch_index[i]]], dim=0))
    x = torch.cat(inputs, dim=0)[None]  # [1, N * (F + 2), H, W]
    dims = head.dims
    offset = 0
    for layer in range(len(dims) - 1):
        cin, cout = dims[layer], dims[layer + 1]
        wgt = params[:, offset:offset + cin * cout].reshape(n * cout, cin, 1, 1)
        offset += cin * cout
        bias = params[:, offset:offset + cout].reshape(n * cout)
        offset += cout
        x = F.conv2d(x, wgt, bias, groups=n)
        if layer < len(dims) - 2:
            x = F.relu(x)
    assert offset == params.shape[1]
    return x.reshape(n, dims[-1], h, w)


def test_batched_head_equals_grouped_conv_reference():
    head = DynamicKeypointHead(feat_channels=32, channels=32, num_layers=3, num_keypoints=17, stride=8)
    assert head.num_params == 2737
    feats = torch.randn(3, 32, 9, 13)
    n = 11
    params = torch.randn(n, 2737) * 0.3
    batch_index = torch.tensor([0, 2, 2, 1, 0, 2, 1, 1, 0, 2, 0])
    locations = torch.rand(n, 2) * torch.tensor([13 * 8.0, 9 * 8.0])
    norms = torch.tensor([64.0, 128, 256, 512, 1024])[torch.randint(0, 5, (n,))]
    got = head(feats, params, batch_index, locations, norms)
    want = grouped_conv_reference(feats, params, batch_index, locations, norms, head)
    assert got.shape == (n, 17, 9, 13)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_other_depths_and_widths_and_empty():
    for layers, width, k in [(1, 32, 5), (2, 16, 17), (4, 8, 3)]:
        head = DynamicKeypointHead(feat_channels=6, channels=width, num_layers=layers, num_keypoints=k)
        feats = torch.randn(2, 6, 5, 7)
        params = torch.randn(4, head.num_params)
        bi = torch.tensor([1, 0, 1, 1])
        loc = torch.rand(4, 2) * 40
        norms = torch.full((4,), 64.0)
        torch.testing.assert_close(head(feats, params, bi, loc, norms),
                                   grouped_conv_reference(feats, params, bi, loc, norms, head), rtol=1e-4, atol=1e-4)
    empty = head(feats, torch.zeros(0, head.num_params), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2),
                 torch.zeros(0))
    assert empty.shape == (0, 3, 5, 7)


def test_split_order_is_w0_b0_w1_b1_w2_b2():
    head = DynamicKeypointHead(feat_channels=2, channels=3, num_layers=2, num_keypoints=2)
    # dims 4 -> 3 -> 2: w0 12, b0 3, w1 6, b1 2
    params = torch.arange(23, dtype=torch.float32)[None]
    (w0, b0), (w1, b1) = head.split_params(params)
    assert w0.shape == (1, 3, 4) and w0[0, 0].tolist() == [0, 1, 2, 3] and w0[0, 2, 3] == 11
    assert b0[0].tolist() == [12, 13, 14]
    assert w1.shape == (1, 2, 3) and w1[0, 1].tolist() == [18, 19, 20]
    assert b1[0].tolist() == [21, 22]


def test_relative_coordinates():
    head = DynamicKeypointHead(stride=8)
    loc = torch.tensor([[20.0, 12.0]])
    rel = head.relative_coords(loc, torch.tensor([64.0]), 2, 3)  # grid centres x 4, 12, 20; y 4, 12
    assert rel.shape == (1, 2, 6)
    want_x = [(20 - 4) / 64, (20 - 12) / 64, 0.0] * 2
    want_y = [(12 - 4) / 64] * 3 + [0.0] * 3
    assert torch.allclose(rel[0, 0], torch.tensor(want_x))
    assert torch.allclose(rel[0, 1], torch.tensor(want_y))


def test_peaks_of_a_batch_are_each_image_alone():
    """B images with S instances each (the fixed-shape slots) in the same operations: each image's peaks as if
    it ran alone, for one and several layers, one tile and many."""
    gen = torch.Generator().manual_seed(3)
    for layers in (1, 3):
        head = DynamicKeypointHead(feat_channels=6, channels=8, num_layers=layers, num_keypoints=5)
        feats = torch.randn(3, 6, 20, 30, generator=gen)  # 600 cells: 3 tiles at the 256-cell floor
        params = torch.randn(3 * 4, head.num_params, generator=gen)
        loc = torch.rand(12, 2, generator=gen) * 60
        norms = torch.full((12,), 64.0)
        for tile_bytes in (None, 1):  # one tile; the smallest tiles (256 cells)
            cell, peak, total = head.peaks(feats, params, loc, norms, tile_bytes)
            assert cell.shape == peak.shape == total.shape == (12, 5)
            for image in range(3):
                sel = slice(4 * image, 4 * image + 4)
                one = head.peaks(feats[image], params[sel], loc[sel], norms[sel], tile_bytes)
                assert torch.equal(one[0], cell[sel])
                torch.testing.assert_close(one[1], peak[sel], rtol=1e-6, atol=1e-5)
                torch.testing.assert_close(one[2], total[sel], rtol=1e-6, atol=1e-6)
