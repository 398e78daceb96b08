"""The GPU inference path, tested on CPU tensors (its code runs on any device): device-side preprocessing
against PIL, the fixed-shape (sync-free) post-processing against the dynamic one, NMS without host
synchronisation, the buckets and padding of the CUDA-graph wrapper (through its eager stand-in), weights
in bf16 with the decoding in fp32. The graph capture itself and the CUDA sync check skip without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_lively
from torch.utils._python_dispatch import TorchDispatchMode

import fcpose
from fcpose.config import TestConfig
from fcpose.data.transforms import batch_images, resize_image, resize_shape, resize_tensor, upload_image
from fcpose.errors import FCPoseError
from fcpose.inference.graphs import GraphedFunction, choose_bucket, crop_batch, pad_into
from fcpose.inference.runner import InferenceRunner
from fcpose.model.deploy import optimize_for_inference
from fcpose.ops.boxes import nms, nms_fixed
from fcpose.postprocess import PostProcessor
from fcpose.precision import Precision, cpu_supports
from fcpose.structures import DenseOutputs

CUDA = torch.cuda.is_available()


def camera_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colours, edges and noise (what a resize filter meets in photos)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (9.0 + c) + c) * np.cos(yy / 13.0 - c) for c in range(3)], axis=-1)
    base[h // 3: h // 2, w // 4: w // 2] = 250.0  # a hard-edged block
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def assert_same_detections(a, b, kpt_atol=0.0, atol=0.0):
    """The same people in the same order, boxes and scores within ``atol`` (default: equal), keypoints
    within ``kpt_atol``."""
    assert len(a) == len(b)
    assert torch.equal(a.levels, b.levels) and torch.equal(a.locations, b.locations)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=atol)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=atol)
    torch.testing.assert_close(a.keypoints, b.keypoints, rtol=0, atol=kpt_atol)
    assert a.image_size == b.image_size


# ------------------------------------------------------------------------------------------------
# Preprocessing on the device
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,short,longest", [((333, 500), 800, 1333), ((425, 640), 512, 1333),
                                                 ((1080, 1920), 512, 853), ((600, 400), 300, 1333)],
                         ids=["up", "up-small", "down", "down-portrait"])
def test_resize_tensor_matches_pil(shape, short, longest):
    image = camera_image(*shape)
    h, w = resize_shape(*shape, short, longest)
    ref = resize_image(image, h, w).astype(np.int16)
    got = resize_tensor(upload_image(image, "cpu"), h, w)
    assert got.dtype == torch.float32 and got.shape == (3, h, w)
    assert torch.equal(got, got.round())  # whole grey levels, like the uint8 PIL image
    diff = np.abs(got.permute(1, 2, 0).numpy().astype(np.int16) - ref)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.05, (diff.max(), (diff > 0).mean())


def test_resize_tensor_same_size_is_the_image():
    image = camera_image(64, 96)
    assert torch.equal(resize_tensor(upload_image(image, "cpu"), 64, 96),
                       torch.from_numpy(image).permute(2, 0, 1).float())


def test_predictor_preprocess_paths(tiny_model):
    image = camera_image(150, 230)
    host = fcpose.Predictor(tiny_model, min_size=128, max_size=224, preprocess="host")
    device = fcpose.Predictor(tiny_model, min_size=128, max_size=224, preprocess="device")
    assert fcpose.Predictor(tiny_model).preprocess == "host"  # the CPU default: PIL, as before
    (a, size_a), (b, size_b) = host.prepare(image), device.prepare(image)
    assert size_a == size_b and a.shape == b.shape and a.dtype == b.dtype == torch.float32
    std = tiny_model.pixel_std.view(3, 1, 1)
    assert float(((a - b) * std).abs().max()) <= 2 + 1e-3  # at most two grey levels apart
    assert len(device(image).keypoints.shape) == 3
    with pytest.raises(FCPoseError, match="preprocess"):
        fcpose.Predictor(tiny_model, preprocess="gpu")


# ------------------------------------------------------------------------------------------------
# NMS without host synchronisation
# ------------------------------------------------------------------------------------------------
def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in a few clusters (heavy overlaps, as around detected people), some exact score ties."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 15), 2, generator=gen) * 200
    pick = torch.randint(0, centres.shape[0], (n,), generator=gen)
    xy = centres[pick] + torch.randn(n, 2, generator=gen) * 6
    wh = 20 + torch.rand(n, 2, generator=gen) * 30
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    scores = (torch.rand(n, generator=gen) * 20).round() / 20  # ties
    return boxes, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_nms_fixed_equals_nms(seed, threshold):
    boxes, scores = random_boxes(150, seed)
    valid = scores > 0.2
    order, keep, decided = nms_fixed(boxes, scores, threshold, valid, rounds=150)
    assert int(decided) == 150
    ref = torch.nonzero(valid).squeeze(1)
    ref = ref[nms(boxes[ref], scores[ref], threshold)]
    assert torch.equal(order[keep], ref)


def test_nms_fixed_partial_rounds_are_a_correct_prefix():
    """A chain (each box overlaps only its neighbours) decides one box per round: few rounds give a correct
    but short decided prefix, never a wrong decision."""
    n = 30
    x = torch.arange(n, dtype=torch.float32) * 4
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)
    scores = torch.linspace(1, 0.5, n)
    greedy = nms(boxes, scores, 0.3)
    full = torch.zeros(n, dtype=torch.bool)
    full[greedy] = True
    order, keep, decided = nms_fixed(boxes, scores, 0.3, torch.ones(n, dtype=torch.bool), rounds=5)
    d = int(decided)
    assert 0 < d < n
    assert torch.equal(keep[:d], full[order][:d])
    assert not bool((keep & ~full[order]).any())  # nothing kept that greedy suppresses


def test_nms_fixed_batch_is_each_image_alone():
    """A batch of images runs in the same operations and gives each image's own result, whatever the
    others hold (an empty image, one where every box is invalid)."""
    sets = [random_boxes(120, seed) for seed in range(3)]
    boxes = torch.stack([b for b, _ in sets])
    scores = torch.stack([s for _, s in sets])
    valid = scores > 0.2
    valid[2] = False
    order, keep, decided = nms_fixed(boxes, scores, 0.5, valid, rounds=12)
    assert order.shape == keep.shape == (3, 120) and decided.shape == (3,)
    for i in range(3):
        one = nms_fixed(boxes[i], scores[i], 0.5, valid[i], rounds=12)
        assert torch.equal(one[0], order[i]) and torch.equal(one[1], keep[i]) and int(one[2]) == int(decided[i])
    assert int(decided[2]) == 120 and not bool(keep[2].any())


class NoHostSync(TorchDispatchMode):
    """Records every op whose result a CPU would have to wait for on a GPU: scalars to Python, data-dependent
    output shapes (nonzero, masked_select, unique, boolean indexing), equality tests."""

    FORBIDDEN = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
                 "aten::unique_dim", "aten::unique_consecutive", "aten::equal", "aten::is_nonzero",
                 "aten::repeat_interleave"}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in self.FORBIDDEN:
            self.seen.append(name)
        elif name in ("aten::index", "aten::index_put", "aten::index_put_"):
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.seen.append(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))


def test_fixed_postprocess_makes_no_host_sync(tiny_model):
    post = PostProcessor.from_model(tiny_model, TestConfig(score_threshold=0.05, max_detections=20))
    with torch.no_grad():
        dense = tiny_model(torch.randn(2, 3, 96, 128))
    post.fixed(tiny_model, dense)  # the device constants are made once, outside (as in a graph's warm-up)
    with NoHostSync() as mode, torch.no_grad():
        slots = post.fixed(tiny_model, dense)
    assert mode.seen == [], sorted(set(mode.seen))
    assert slots.valid.shape == (2, 20) and slots.keypoints.shape == (2, 20, 17, 3)
    with NoHostSync() as mode, torch.no_grad():  # the detector notices the dynamic path's syncs
        post(tiny_model, dense, [(96, 128)] * 2)
    assert "aten::nonzero" in mode.seen


# ------------------------------------------------------------------------------------------------
# The fixed-shape post-processing equals the dynamic one
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [
    TestConfig(score_threshold=0.05),  # the defaults: many people on a lively random model
    TestConfig(score_threshold=0.0, max_detections=7),  # the max_detections cut
    TestConfig(score_threshold=0.5, nms_threshold=0.3),
    TestConfig(score_threshold=1.0),  # nobody
    TestConfig(score_threshold=0.0, pre_nms_topk=50),  # levels truncated by the top-k
], ids=["defaults", "cut-7", "nms-0.3", "nobody", "topk-50"])
@pytest.mark.parametrize("inputs", ["random", "zeros"])  # zeros: equal scores everywhere (ties)
def test_fixed_postprocess_equals_dynamic(tiny_model, params, inputs):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 96, 160, generator=gen) if inputs == "random" else torch.zeros(2, 3, 96, 160)
    with torch.no_grad():
        dense = tiny_model(x)
    post = PostProcessor.from_model(tiny_model, params)
    sizes, out = [(96, 160), (90, 150)], [(192, 320), (180, 300)]
    dynamic = post(tiny_model, dense, sizes, out)
    slots = post.fixed(tiny_model, dense)
    exact = bool(slots.exact.all())
    # Zeros: every location of a level scores the same, so more people can tie at the max_detections cut than
    # there are slots: the slots then say so, and the runner reruns the batch dynamically (checked below).
    assert exact or inputs == "zeros"
    if exact:
        for a, b in zip(dynamic, post.finish(slots, sizes, out)):
            assert_same_detections(a, b)
    runner = InferenceRunner(tiny_model, post, optimize=False, sync_free=True)
    runner.model = tiny_model
    with torch.no_grad():
        for a, b in zip(dynamic, runner.finish(slots, dense, sizes, out)):
            assert_same_detections(a, b)
    assert runner.fallbacks == int(not exact)
    if params.score_threshold >= 1.0:
        assert all(len(d) == 0 for d in dynamic)
    elif inputs == "random":
        assert all(len(d) > 0 for d in dynamic)


def test_inexact_slots_fall_back_to_the_dynamic_path(tiny_model):
    """Without NMS rounds the fixed form cannot vouch for its result: the runner reruns the batch."""
    post = PostProcessor.from_model(tiny_model, TestConfig(score_threshold=0.0, nms_threshold=0.3))
    post.nms_rounds = 0
    runner = InferenceRunner(tiny_model, post, sync_free=True)
    plain = InferenceRunner(tiny_model, post)
    batch = tiny_model.normalize(torch.rand(1, 3, 96, 128) * 255)
    with torch.no_grad():
        assert not bool(post.fixed(runner.model, runner.network(batch)).exact.all())
    (a,) = runner(batch, [(96, 128)], [(96, 128)])
    (b,) = plain(batch, [(96, 128)], [(96, 128)])
    assert runner.fallbacks == 1
    assert_same_detections(a, b)


def test_sync_free_predictor_equals_default(tiny_model):
    images = [camera_image(120, 200, seed=s) for s in range(3)] + [np.zeros((100, 100, 3), np.uint8)]
    ref = fcpose.Predictor(tiny_model, min_size=96, max_size=160, batch_size=2)
    fast = fcpose.Predictor(tiny_model, min_size=96, max_size=160, batch_size=2, sync_free=True)
    assert not ref.runner.sync_free and fast.runner.sync_free
    for a, b in zip(ref.predict(images), fast.predict(images)):
        assert b.boxes.device.type == "cpu"
        assert_same_detections(a, b, kpt_atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Buckets, padding and the graph wrapper (eager stand-in on the CPU)
# ------------------------------------------------------------------------------------------------
def test_choose_bucket():
    buckets = [(512, 704), (704, 512), (512, 896), (800, 800)]
    assert choose_bucket(1, 480, 640) == (1, 480, 640)  # no buckets: the input's own shape
    assert choose_bucket(1, 480, 640, buckets) == (1, 512, 704)
    assert choose_bucket(1, 512, 705, buckets) == (1, 512, 896)
    assert choose_bucket(1, 640, 480, buckets) == (1, 704, 512)
    assert choose_bucket(1, 800, 704, buckets) == (1, 800, 800)
    assert choose_bucket(1, 801, 64, buckets) is None  # larger than every bucket: eager
    assert choose_bucket(3, 64, 64, None, [1, 4, 16]) == (4, 64, 64)
    assert choose_bucket(17, 64, 64, None, [1, 4, 16]) is None


def test_pad_into_and_crop_batch():
    batch = torch.rand(2, 3, 4, 5)
    buffer = torch.full((4, 3, 8, 8), 7.0)
    pad_into(buffer, batch)
    assert torch.equal(buffer[:2, :, :4, :5], batch)
    assert float(buffer.sum()) == pytest.approx(float(batch.sum()))  # zeros everywhere else
    with pytest.raises(ValueError):
        pad_into(torch.zeros(1, 3, 8, 8), batch)
    dense = DenseOutputs(cls_logits=[buffer], box_reg=[buffer], centerness=[buffer], ctrl_feats=[buffer],
                         kpt_feats=buffer, kpt_offsets=buffer, strides=[8])
    cropped = crop_batch(dense, 2)
    assert cropped.kpt_feats.shape[0] == 2 and cropped.cls_logits[0].shape[0] == 2 and cropped.strides == [8]
    assert crop_batch((buffer, {"a": buffer}), 1)[1]["a"].shape[0] == 1


def test_graphed_function_buckets_and_eager_fallback():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2, x.sum(dim=(1, 2, 3))

    graphed = GraphedFunction(fn, buckets=[(8, 8), (8, 16)], batch_sizes=[1, 4], max_graphs=2, capture=False)
    x = torch.rand(3, 3, 6, 7)
    (doubled, sums), ran = graphed(x)
    assert ran == 4 and doubled.shape == (4, 3, 8, 8)  # run as the (4, 8, 8) bucket
    assert torch.equal(crop_batch(doubled, 3)[:, :, :6, :7], x * 2) and float(sums[3]) == 0.0
    graphed(torch.rand(1, 3, 8, 9))  # a second bucket, (1, 8, 16)
    assert sorted(graphed.calls) == [(1, 8, 16), (4, 8, 8)]
    out, ran = graphed(torch.rand(1, 3, 4, 4))  # a third bucket would exceed max_graphs: eager, unpadded
    assert ran == 1 and out[0].shape == (1, 3, 4, 4) and graphed.eager_calls == 1
    graphed(torch.rand(1, 3, 9, 9))  # fits no bucket: eager
    assert graphed.eager_calls == 2 and calls[-1] == (1, 3, 9, 9)


def test_runner_graph_path_equals_eager_on_the_same_padded_input(tiny_model):
    post = PostProcessor.from_model(tiny_model, TestConfig(score_threshold=0.05, max_detections=30))
    graphed = InferenceRunner(tiny_model, post, sync_free=True, cuda_graphs=True, buckets=[(96, 160)],
                              batch_sizes=[1, 2])
    eager = InferenceRunner(tiny_model, post, sync_free=True)
    assert graphed.graphs is not None and eager.graphs is None
    gen = torch.Generator().manual_seed(2)
    x = tiny_model.normalize(torch.rand(1, 3, 64, 96, generator=gen) * 255)
    # Exact shape: the "graph" sees the input itself.
    (a,) = graphed(batch_images([x[0]], 32), [(64, 96)], [(64, 96)])
    # The bucket is larger: equal to the eager runner on the input padded to the bucket by hand.
    padded = torch.zeros(1, 3, 96, 160)
    padded[:, :, :64, :96] = x
    (b,) = eager(padded, [(64, 96)], [(64, 96)])
    assert_same_detections(a, b)
    assert list(graphed.graphs.calls) == [(1, 96, 160)]
    two = graphed(torch.cat([padded, padded]), [(64, 96)] * 2, [(64, 96)] * 2)
    assert len(two) == 2 and list(graphed.graphs.calls) == [(1, 96, 160), (2, 96, 160)]
    for d in two:  # a batch of two (convolutions may round differently than at batch 1)
        assert_same_detections(d, b, kpt_atol=1e-3, atol=1e-4)


def test_graph_path_inside_and_outside_inference_mode(tiny_model):
    """A bucket first run inside inference mode (as Predictor does) replays for a caller outside it."""
    runner = InferenceRunner(tiny_model, sync_free=True, cuda_graphs=True)
    x = tiny_model.normalize(torch.rand(1, 3, 64, 96) * 255)
    with torch.inference_mode():
        (a,) = runner(x, [(64, 96)], [(64, 96)])
    (b,) = runner(x, [(64, 96)], [(64, 96)])
    assert_same_detections(a, b)


def test_frames_graphed_from_upload_to_people(tiny_model):
    """Device preprocessing with graphs: uint8 frames of one size run resize, normalisation, padding, network
    and post-processing as one (stand-in) graph per frame size, with the usual route's results; sizes beyond
    the graphs' room, buckets and host preprocessing take the usual route."""
    sizes = [(120, 200), (120, 200), (100, 100), (90, 150), (130, 90), (61, 77), (120, 200)]
    images = [camera_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    options = dict(min_size=96, max_size=160, batch_size=1, preprocess="device", sync_free=True)
    usual = fcpose.Predictor(tiny_model, **options)
    graphed = fcpose.Predictor(tiny_model, cuda_graphs=True, **options)
    runner = graphed.runner
    assert usual.runner.pixel_graphs is None and runner.pixel_graphs is not None
    for a, b in zip(usual.predict(images), graphed.predict(images)):
        assert b.boxes.device.type == "cpu" and len(a) > 0
        assert_same_detections(a, b)
    # four frame sizes got graphs (the default room); the fifth went through a network graph
    assert sorted(runner.pixel_graphs.calls) == [(1, 90, 150), (1, 100, 100), (1, 120, 200), (1, 130, 90)]
    assert sorted(runner.graphs.calls) == [(1, 96, 128)]
    assert runner.pixel_graphs.eager_calls == 0
    frames = runner.pixel_graphs.calls[(1, 120, 200)].input
    assert frames.dtype == torch.uint8 and frames.is_contiguous(memory_format=torch.channels_last)
    # a batch of frames of one size, padded to a graph batch size: the same people as one by one
    batched = fcpose.Predictor(tiny_model, cuda_graphs=True, batch_sizes=[4], **{**options, "batch_size": 4})
    for a, b in zip(graphed.predict(images[:2]), batched.predict(images[:2])):
        assert_same_detections(a, b, kpt_atol=1e-3, atol=1e-4)
    assert list(batched.runner.pixel_graphs.calls) == [(4, 120, 200)]
    # buckets pad inputs to shared sizes, host preprocessing resizes with PIL: no frame graphs there
    assert fcpose.Predictor(tiny_model, cuda_graphs=True, buckets=[(96, 160)], **options).runner.pixel_graphs is None
    assert fcpose.Predictor(tiny_model, cuda_graphs=True, **{**options, "preprocess": "host"}
                            ).runner.pixel_graphs is None


def test_resize_tensor_batch_is_each_image_alone():
    images = [camera_image(90, 130, seed=s) for s in range(3)]
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    batch = resize_tensor(frames, 60, 87)
    assert batch.shape == (3, 3, 60, 87)
    for image, resized in zip(images, batch):
        assert torch.equal(resized, resize_tensor(upload_image(image, "cpu"), 60, 87))


def test_cuda_graphs_need_the_sync_free_path(tiny_model):
    with pytest.raises(FCPoseError, match="sync_free"):
        InferenceRunner(tiny_model, cuda_graphs=True, sync_free=False)


# ------------------------------------------------------------------------------------------------
# Half-precision weights; the decoding stays float32
# ------------------------------------------------------------------------------------------------
def test_cast_weights_keeps_controller_and_buffers_fp32(tiny_model):
    net = optimize_for_inference(tiny_model, dtype=torch.bfloat16, channels_last=False)
    dtypes = {p.dtype for n, p in net.named_parameters() if not n.startswith("head.controller")}
    assert dtypes == {torch.bfloat16}
    assert net.head.controller.weight.dtype == torch.float32
    assert net.pixel_mean.dtype == net.rel_coord_norm.dtype == torch.float32
    assert tiny_model.head.cls_logits.weight.dtype == torch.float32  # the original is untouched
    with pytest.raises(FCPoseError, match="optimize"):
        InferenceRunner(tiny_model, optimize=False, cast_weights=True)


def _upcast(dense: DenseOutputs) -> DenseOutputs:
    return DenseOutputs(cls_logits=[t.float() for t in dense.cls_logits], box_reg=[t.float() for t in dense.box_reg],
                        centerness=[t.float() for t in dense.centerness],
                        ctrl_feats=[t.float() for t in dense.ctrl_feats], kpt_feats=dense.kpt_feats.float(),
                        kpt_offsets=dense.kpt_offsets.float(), strides=dense.strides)


@pytest.mark.parametrize("mode", ["autocast", "cast_weights"])
def test_decode_is_fp32_under_bf16(tiny_model, mode):
    """Under bf16 (autocast, or weights converted) the network's outputs are bf16 and everything after it —
    selection, NMS, controller, dynamic heads, peaks and offsets — computes in float32: the result equals
    decoding the same outputs upcast to float32 beforehand."""
    net = optimize_for_inference(tiny_model, dtype=torch.bfloat16 if mode == "cast_weights" else None)
    policy = Precision(torch.device("cpu"), "bf16", cast_weights=mode == "cast_weights")
    x = tiny_model.normalize(torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(4)) * 255)
    with torch.inference_mode(), policy.autocast():
        dense = net(x.to(policy.weight_dtype).contiguous(memory_format=torch.channels_last))
    assert dense.kpt_feats.dtype == dense.cls_logits[0].dtype == torch.bfloat16
    post = PostProcessor.from_model(net, TestConfig(score_threshold=0.05, max_detections=20))
    with torch.inference_mode():
        theta = net.instance_params(dense, post.select(dense))
        assert theta.dtype == torch.float32  # the controller is float32 in both modes
        for a, b in zip(post(net, dense, [(96, 128)] * 2), post(net, _upcast(dense), [(96, 128)] * 2)):
            assert a.keypoints.dtype == a.boxes.dtype == a.scores.dtype == torch.float32
            assert_same_detections(a, b)
        slots = post.fixed(net, dense)
    assert slots.keypoints.dtype == slots.scores.dtype == torch.float32


@pytest.mark.skipif(not cpu_supports("bf16"), reason="this CPU has no native bf16 kernels")
def test_bf16_weights_runner_on_cpu(tiny_model):
    ref = fcpose.Predictor(tiny_model, score_threshold=0.05)
    low = fcpose.Predictor(tiny_model, score_threshold=0.05, precision="bf16", cast_weights=True)
    assert low.runner.cast_weights and not ref.runner.cast_weights
    image = camera_image(128, 160)
    a, b = ref(image), low(image)
    assert len(b) > 0 and b.keypoints.dtype == torch.float32
    assert abs(len(a) - len(b)) <= max(2, len(a) // 5)


# ------------------------------------------------------------------------------------------------
# CUDA only
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_graph_equals_eager():
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny"))
    post = PostProcessor.from_model(model, TestConfig(score_threshold=0.05, max_detections=30))
    graphed = InferenceRunner(model, post, device="cuda", precision="fp32")
    eager = InferenceRunner(model, post, device="cuda", precision="fp32", cuda_graphs=False)
    assert graphed.graphs is not None
    for seed in range(3):  # replays of one captured graph with new inputs
        x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(seed)) * 255
        x = model.normalize(x.to(model.pixel_mean.device))  # the runners moved the model (Module.to is in place)
        (a,) = graphed(x.cuda(), [(96, 160)], [(96, 160)])
        (b,) = eager(x.cuda(), [(96, 160)], [(96, 160)])
        assert_same_detections(a, b, kpt_atol=1e-4)
    assert graphed.graphs.failed is None and graphed.graphs.calls[(1, 96, 160)].graph is not None


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_frame_graph_equals_eager():
    """Upload, resize, normalisation, padding, network and post-processing captured as one graph per frame
    size: the same people as the eager device route."""
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny"))
    options = dict(device="cuda", min_size=96, max_size=160, batch_size=1, preprocess="device")
    graphed = fcpose.Predictor(model, **options)
    eager = fcpose.Predictor(model, cuda_graphs=False, **options)
    images = [camera_image(120, 200, seed=s) for s in range(3)]
    for a, b in zip(eager.predict(images), graphed.predict(images)):
        assert_same_detections(a, b, kpt_atol=1e-4, atol=1e-4)
    call = graphed.runner.pixel_graphs.calls[(1, 120, 200)]
    assert graphed.runner.pixel_graphs.failed is None and call.graph is not None


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_fixed_postprocess_never_synchronises():
    torch.manual_seed(0)
    model = make_lively(fcpose.build_model("fcpose_r18_tiny")).cuda()
    post = PostProcessor.from_model(model, TestConfig(score_threshold=0.05))
    with torch.no_grad():
        dense = model(torch.randn(2, 3, 96, 128, device="cuda"))
        post.fixed(model, dense)  # device constants
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            post.fixed(model, dense)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------------------------
# The golden official checkpoint on coco_tiny (skips without ../shared)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_runs(golden, coco_tiny):
    """Dense outputs of the golden R-50 at short side 512 for two coco_tiny images, with both resizes (the
    measurement in docs/gpu.md §1 ran all four at 512 and 800)."""
    from fcpose.data.images import read_image
    from fcpose.weights.checkpoint import load_model

    model = load_model(golden / "model_r50_fp16.pth")
    runs = {}
    for mode in ("host", "device"):
        predictor = fcpose.Predictor(model, min_size=512, max_size=1333, preprocess=mode)
        for path in sorted(coco_tiny.glob("*.jpg"))[1:3]:
            image = read_image(path)
            tensor, size = predictor.prepare(image)
            dense = predictor.runner.network(batch_images([tensor], 32))
            runs[mode, path.name] = (predictor, dense, size, image.shape[:2])
    return runs


def test_golden_fixed_postprocess_equals_dynamic(golden_runs):
    """~2,000 candidates above the threshold per image (a model trained on four images): the fixed form
    still decides the best 100 exactly within its NMS rounds and gives the dynamic path's people."""
    for (mode, name), (predictor, dense, size, out) in golden_runs.items():
        if mode != "host":
            continue
        post = predictor.postprocessor
        with torch.inference_mode():
            (a,) = post(predictor.model, dense, [size], [out])
            slots = post.fixed(predictor.model, dense)
        assert bool(slots.exact.all()), name
        (b,) = post.finish(slots, [size], [out])
        assert len(a) >= 80, name
        assert_same_detections(a, b)


def test_golden_device_resize_moves_keypoints_little(golden_runs):
    """The same people (generating locations) from both resizes, keypoints a fraction of a pixel apart
    (docs/gpu.md §1 has the distribution and the AP of both, and the command that measured them)."""
    deviations = []
    for (mode, name), (predictor, dense, size, out) in golden_runs.items():
        if mode != "host":
            continue
        other, dense_d, size_d, _ = golden_runs["device", name]
        assert size_d == size
        with torch.inference_mode():
            (a,) = predictor.postprocessor(predictor.model, dense, [size], [out])
            (b,) = other.postprocessor(other.model, dense_d, [size], [out])
        where_a = {tuple(v): i for i, v in enumerate(a.locations.tolist())}
        shared = [(where_a[tuple(v)], j) for j, v in enumerate(b.locations.tolist()) if tuple(v) in where_a]
        assert len(shared) >= 0.9 * max(len(a), len(b)), name
        i, j = (torch.tensor(v) for v in zip(*shared))
        deviations.append((a.keypoints[i, :, :2] - b.keypoints[j, :, :2]).norm(dim=-1).reshape(-1))
    dev = torch.cat(deviations)
    assert float(dev.median()) < 0.5 and float((dev > 8).float().mean()) < 0.05, (dev.median(), dev.max())
