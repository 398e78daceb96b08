"""The GPU inference path, tested on CPU tensors (its code runs on any device): device-side preprocessing
against PIL, the fixed-shape (sync-free) post-processing against the dynamic one, NMS without host
synchronisation, the CUDA route of the runner with its graph wrapper (through the eager stand-in for
capture), weights in bf16 with the decoding in fp32. The graph capture itself and the CUDA sync check skip
without a GPU."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import make_lively
from torch.utils._python_dispatch import TorchDispatchMode

import fcpose
from fcpose.config import TestConfig
from fcpose.data.transforms import batch_images, resize_image, resize_shape, resize_tensor, upload_image
from fcpose.errors import FCPoseError
from fcpose.inference.graphs import GraphedFunction
from fcpose.inference.runner import GRAPHS_ENV, InferenceRunner
from fcpose.model.deploy import optimize_for_inference
from fcpose.ops.boxes import nms, nms_fixed
from fcpose.postprocess import PostProcessor
from fcpose.precision import Precision, cpu_supports
from fcpose.structures import DenseOutputs

CUDA = torch.cuda.is_available()


@contextlib.contextmanager
def cuda_route():
    """Runners (and Predictors) built inside take the CUDA route on the CPU: half-precision weights, the
    fixed-shape post-processing and graphs through the eager stand-in for capture (the internal test hook)."""
    InferenceRunner._route_device = "cuda"
    try:
        yield
    finally:
        InferenceRunner._route_device = None


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
    got = resize_tensor(upload_image(image, torch.device("cpu")), h, w)
    assert got.dtype == torch.float32 and got.shape == (3, h, w)
    assert torch.equal(got, got.round())  # whole grey levels, like the uint8 PIL image
    diff = np.abs(got.permute(1, 2, 0).numpy().astype(np.int16) - ref)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.05, (diff.max(), (diff > 0).mean())


def test_resize_tensor_same_size_is_the_image():
    image = camera_image(64, 96)
    assert torch.equal(resize_tensor(upload_image(image, torch.device("cpu")), 64, 96),
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
    with cuda_route():
        runner = InferenceRunner(tiny_model, post, optimize=False)
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
    with cuda_route():
        runner = InferenceRunner(tiny_model, post)
    plain = InferenceRunner(tiny_model, post)
    batch = tiny_model.normalize(torch.rand(1, 3, 96, 128) * 255)
    with torch.no_grad():
        assert not bool(post.fixed(runner.model, runner.network(batch)).exact.all())
    (a,) = runner(batch, [(96, 128)], [(96, 128)])
    (b,) = plain(batch, [(96, 128)], [(96, 128)])
    assert runner.fallbacks == 1
    assert_same_detections(a, b)


def test_cuda_route_predictor_equals_cpu_route(tiny_model):
    images = [camera_image(120, 200, seed=s) for s in range(3)] + [np.zeros((100, 100, 3), np.uint8)]
    ref = fcpose.Predictor(tiny_model, min_size=96, max_size=160, batch_size=2)
    with cuda_route():
        fast = fcpose.Predictor(tiny_model, min_size=96, max_size=160, batch_size=2)
    assert not ref.runner.sync_free and fast.runner.sync_free
    for a, b in zip(ref.predict(images), fast.predict(images)):
        assert b.boxes.device.type == "cpu"
        assert_same_detections(a, b, kpt_atol=1e-4)


# ------------------------------------------------------------------------------------------------
# The graph wrapper and the CUDA route's graphs (eager stand-in on the CPU)
# ------------------------------------------------------------------------------------------------
def test_graphed_function_per_shape_and_eager_fallback():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2, x.sum(dim=(1, 2, 3))

    graphed = GraphedFunction(fn, max_graphs=2, capture=False)
    x = torch.rand(3, 3, 6, 7)
    doubled, sums = graphed(x)
    assert torch.equal(doubled, x * 2) and sums.shape == (3,)
    graphed(torch.rand(1, 3, 8, 9))  # a second shape
    assert sorted(graphed.calls) == [(1, 3, 8, 9), (3, 3, 6, 7)]
    again, _ = graphed(x + 1)  # a replay: the new input in the shape's static buffer
    assert torch.equal(again, (x + 1) * 2) and graphed.eager_calls == 0
    out, _ = graphed(torch.rand(1, 3, 4, 4))  # a third shape would exceed max_graphs: eager
    assert out.shape == (1, 3, 4, 4) and graphed.eager_calls == 1
    assert len(graphed.calls) == 2 and calls[-1] == (1, 3, 4, 4)


def test_runner_graph_path_equals_eager(tiny_model):
    post = PostProcessor.from_model(tiny_model, TestConfig(score_threshold=0.05, max_detections=30))
    with cuda_route():
        graphed = InferenceRunner(tiny_model, post)
        eager = InferenceRunner(tiny_model, post, cuda_graphs=False)
    assert graphed.graphs is not None and eager.graphs is None
    gen = torch.Generator().manual_seed(2)
    x = batch_images([tiny_model.normalize(torch.rand(3, 64, 96, generator=gen) * 255)], 32)
    (a,) = graphed(x, [(64, 96)], [(64, 96)])
    (b,) = eager(x, [(64, 96)], [(64, 96)])
    assert_same_detections(a, b)
    assert list(graphed.graphs.calls) == [(1, 3, 64, 96)]
    two = graphed(torch.cat([x, x]), [(64, 96)] * 2, [(64, 96)] * 2)
    assert len(two) == 2 and list(graphed.graphs.calls) == [(1, 3, 64, 96), (2, 3, 64, 96)]
    for d in two:  # a batch of two (convolutions may round differently than at batch 1)
        assert_same_detections(d, b, kpt_atol=1e-3, atol=1e-4)


def test_graph_path_inside_and_outside_inference_mode(tiny_model):
    """A shape first run inside inference mode (as Predictor does) replays for a caller outside it."""
    with cuda_route():
        runner = InferenceRunner(tiny_model)
    x = tiny_model.normalize(torch.rand(1, 3, 64, 96) * 255)
    with torch.inference_mode():
        (a,) = runner(x, [(64, 96)], [(64, 96)])
    (b,) = runner(x, [(64, 96)], [(64, 96)])
    assert_same_detections(a, b)


def test_one_route_per_device(tiny_model, monkeypatch):
    """The device chooses the route; graphs are the CUDA route's, on unless FCPOSE_CUDA_GRAPHS=0 (or compile);
    a runner with another post-processor shares the network and has graphs of its own."""
    cpu = InferenceRunner(tiny_model)
    assert not cpu.sync_free and cpu.graphs is None and not cpu.cast_weights
    with pytest.raises(FCPoseError, match="cuda_graphs needs a CUDA device"):
        InferenceRunner(tiny_model, cuda_graphs=True)
    with cuda_route():
        runner = InferenceRunner(tiny_model)
        assert runner.sync_free and runner.graphs is not None
        assert InferenceRunner(tiny_model, compile=True).graphs is None
        monkeypatch.setenv(GRAPHS_ENV, "0")
        assert InferenceRunner(tiny_model).graphs is None
    other = runner.with_postprocessor(runner.postprocessor.with_params(score_threshold=0.5))
    assert other.model is runner.model and other.graphs is not None and other.graphs is not runner.graphs
    assert other.postprocessor.params.score_threshold == 0.5 != runner.postprocessor.params.score_threshold


def test_resize_tensor_batch_is_each_image_alone():
    images = [camera_image(90, 130, seed=s) for s in range(3)]
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    batch = resize_tensor(frames, 60, 87)
    assert batch.shape == (3, 3, 60, 87)
    for image, resized in zip(images, batch):
        assert torch.equal(resized, resize_tensor(upload_image(image, torch.device("cpu")), 60, 87))


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
    with cuda_route():  # the CUDA route converts the weights
        low = fcpose.Predictor(tiny_model, score_threshold=0.05, precision="bf16")
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
    assert graphed.graphs.failed is None and graphed.graphs.calls[(1, 3, 96, 160)].graph is not None


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
