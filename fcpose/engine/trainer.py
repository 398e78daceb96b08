"""``fcpose train``: the training loop, single process or ``torchrun`` DDP.

The loop (:func:`train`) is one readable function: SGD with momentum (or AdamW) and the linear scaling rule,
linear warm-up and step or cosine decay, an optional moving average of the weights, AMP on CUDA, gradient
clipping, and a non-finite loss or gradient that *skips the step* (counted and logged) instead of killing the
run. Checkpoints are atomic and hold everything needed to continue exactly: ``--resume`` gives the same
losses as an uninterrupted run, because the data of iteration ``t`` (which images, which augmentation) is a
pure function of (seed, t) — see
:class:`IterationSampler` — not of the process or worker that loads it.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .. import distributed as dist
from ..config import FCPoseConfig, to_dict
from ..data.augment import TrainTransform
from ..data.coco import CocoKeypointDataset, keypoint_set_from_coco
from ..data.collate import collate, to_model_input
from ..errors import CheckpointError, ConfigError, InputError
from ..fileio import atomic_write_text
from ..loss import FCPoseCriterion
from ..model.fcpose import FCPose, build_model
from ..model.norm import DistributedBatchNorm2d
from ..weights.checkpoint import init_from_checkpoint, load_state, save_checkpoint, unwrap_model
from ..weights.files import safe_load
from ..weights.imagenet import load_imagenet_weights
from .train_checks import clamp_workers, fit_backbone_to_scratch, fit_keypoints_to_data, fit_schedule


# ----------------------------------------------------------------------------------------------
# Data: iteration-deterministic sampling
# ----------------------------------------------------------------------------------------------
class IterationSampler(Sampler):
    """Yields ``(epoch, index)`` items for iterations ``start_iter .. max_iter - 1`` of this rank.

    The global batch of iteration t is positions ``t * B .. (t + 1) * B - 1`` of an endless stream of
    epochs, each a permutation of the dataset seeded by (seed, epoch); rank r takes the r-th contiguous
    slice of ``B / world`` items. A single process with batch B and W processes with B / W each see the
    same images with the same augmentation (it is seeded by (seed, epoch, index) in the dataset).
    """

    def __init__(self, size: int, global_batch: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 start_iter: int = 0, max_iter: int):
        if global_batch % world:
            raise ConfigError(f"solver.ims_per_batch ({global_batch}) must be divisible by the number of "
                              f"processes ({world})")
        self.size, self.batch, self.rank, self.world = size, global_batch, rank, world
        self.seed, self.start_iter, self.max_iter = seed, start_iter, max_iter
        self.local = global_batch // world

    def _perm(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self):
        cache: dict[int, list[int]] = {}
        for it in range(self.start_iter, self.max_iter):
            for j in range(self.rank * self.local, (self.rank + 1) * self.local):
                pos = it * self.batch + j
                epoch = pos // self.size
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = self._perm(epoch)
                yield epoch, cache[epoch][pos % self.size]

    def __len__(self) -> int:
        return max(0, self.max_iter - self.start_iter) * self.local


class EpochIndexed(Dataset):
    """``dataset[(epoch, index)]`` = the item ``index`` with the augmentation of ``epoch``.

    An image that cannot be read (missing, corrupt, another size than its annotation says) does not end the
    run: one line names it (once per image and process) and the next readable item takes its place, so the
    substitute is the same whatever the worker; if no image at all can be read, the error is raised.
    """

    def __init__(self, dataset: CocoKeypointDataset):
        self.dataset = dataset
        self.reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        first: InputError | None = None
        for step in range(len(self.dataset)):
            i = (index + step) % len(self.dataset)
            try:
                return self.dataset[i]
            except InputError as exc:
                first = first or exc
                if i not in self.reported:
                    self.reported.add(i)
                    print(f"warning: skipping a training image: {exc}", file=sys.stderr)
        raise first


# ----------------------------------------------------------------------------------------------
# Optimisation pieces
# ----------------------------------------------------------------------------------------------
class TrainStep(nn.Module):
    """Model + criterion as one module, so that DDP's forward covers the whole loss computation (the
    controller and dynamic heads run inside the criterion)."""

    def __init__(self, model: FCPose, criterion: FCPoseCriterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: torch.Tensor, targets: list[dict], image_sizes: list[tuple[int, int]]):
        return self.criterion(self.model, self.model(images), targets, image_sizes)


_NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, cfg: FCPoseConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW; lr = base_lr x ims_per_batch / reference_batch (linear
    scaling rule); no weight decay on normalisation layers."""
    s = cfg.solver
    lr = s.base_lr * s.ims_per_batch / s.reference_batch
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, _NORM_TYPES) else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(s.momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=s.momentum)


def lr_factor(iteration: int, cfg: FCPoseConfig) -> float:
    """Multiplier of the base lr at ``iteration``: linear warm-up from warmup_factor, then x gamma per
    step (``lr_schedule: step``) or a half cosine down to 0 at max_iter (``lr_schedule: cosine``)."""
    s = cfg.solver
    if s.lr_schedule == "cosine":
        progress = min(1.0, iteration / max(1, s.max_iter))
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = s.gamma ** sum(1 for step in s.steps if iteration >= step)
    if iteration < s.warmup_iters:
        alpha = iteration / s.warmup_iters
        factor *= s.warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: FCPoseConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of :func:`lr_factor`, stepped once after every iteration (as detectron2's hook does):
    the lr that iteration i uses is ``base lr x lr_factor(i)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))


def clip_gradients(params: list[nn.Parameter], cfg: FCPoseConfig) -> torch.Tensor:
    """Clip the gradients as ``solver`` says; returns the total L2 norm *before* clipping (for the log and the
    non-finite check).

    ``clip_grad_value > 0``: every element clamped to ``[-v, v]``, parameter by parameter (the official
    ``CLIP_TYPE: value``); ``clip_grad_norm > 0``: the total norm scaled down to at most that value. Both may
    be set (the norm is clipped first).
    """
    s = cfg.solver
    norm = torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm if s.clip_grad_norm > 0 else float("inf"))
    if s.clip_grad_value > 0:
        torch.nn.utils.clip_grad_value_(params, s.clip_grad_value)
    return norm


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    After optimizer step t (counting from 1) every averaged tensor becomes ``d * avg + (1 - d) * w`` with
    ``d = min(decay, (1 + t) / (10 + t))``: early averages follow the fast-moving weights, later ones
    smooth the last ~1 / (1 - decay) steps. Integer buffers are copied. The average lives in its own copy
    of the (unwrapped) model, which is what gets evaluated and saved. The tensors to average are paired
    once: the optimizer updates the model's weights in place, so each step is one fused ``lerp``.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        source = unwrap_model(model)
        self.module = copy.deepcopy(source).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        avg, src = self.module.state_dict(), source.state_dict()
        floats = [k for k in avg if avg[k].is_floating_point()]
        self._avg, self._src = [avg[k] for k in floats], [src[k] for k in floats]
        self._other = [(avg[k], src[k]) for k in avg if not avg[k].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Average in the tracked model's current weights (call after each optimizer step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._avg, self._src, 1.0 - d)
        for avg, src in self._other:
            avg.copy_(src)

    def state_dict(self) -> dict:
        return {"updates": self.updates,
                "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------
class _Logger:
    """metrics.jsonl + TensorBoard scalars (when tensorboard is installed), main process only."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.writer = None
        self.path = out_dir / "metrics.jsonl"
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            print("note: tensorboard is not installed; logging to metrics.jsonl only", file=sys.stderr)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"iter": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class TrainResult:
    output: Path
    iterations: int
    skipped_steps: int
    last_losses: dict
    metrics: dict
    model: FCPose  # the trained model (unwrapped; the weight average when solver.ema_decay > 0)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def train(cfg: FCPoseConfig, *, data: str, images: str, output: str, resume: bool = False,
          eval_data: str | None = None, eval_images: str | None = None, device: str = "cpu",
          num_workers: int | None = None, progress: bool = True, loss_log: list | None = None,
          init: str | None = None) -> TrainResult:
    """Train FCPose on a COCO-format keypoint dataset; writes ``output/last.pt`` (resumable),
    ``output/model_final.pt``, ``output/config.yaml``, ``output/metrics.jsonl`` and TensorBoard logs.

    The keypoint set is the training data's (:func:`~fcpose.engine.train_checks.fit_keypoints_to_data`): a
    config that set another one is replaced, with one note line saying what was replaced by what.

    ``init``: fine-tune from a checkpoint (fcpose ``.pt``, official ``.pth``, zoo name): its tensors that fit
    are loaded, the others re-initialised and listed (:func:`~fcpose.weights.checkpoint.init_from_checkpoint`);
    the optimiser starts fresh. With ``resume`` and an existing ``last.pt``, that wins and ``init`` is ignored.

    ``loss_log``, if given, receives ``(iteration, {loss name: float})`` for every iteration (tests).
    """
    cfg = copy.deepcopy(cfg)
    distributed = dist.init_distributed(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    main = dist.is_main_process()
    dev = dist.local_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available on this machine")
    out_dir = Path(output)
    s = cfg.solver

    # The dataset defines the keypoint set; the model sizes its heads and controller from it.
    fit_keypoints_to_data(cfg, keypoint_set_from_coco(data), data, verbose=main)
    cfg.validate()
    # Before anything is built or saved, so that checkpoints (and a resumed run) see the same config.
    fit_backbone_to_scratch(cfg, has_pretrained=bool(cfg.model.backbone.weights) or init is not None, verbose=main)
    fit_schedule(cfg, verbose=main)
    torch.manual_seed(s.seed)
    model = build_model(cfg)
    last_path = out_dir / "last.pt"
    if init and not (resume and last_path.exists()):
        report = init_from_checkpoint(model, init)
        if main:
            print(report.summary(), file=sys.stderr)
    elif cfg.model.backbone.weights and not resume:
        report = load_imagenet_weights(model.backbone, cfg.model.backbone.weights)
        if main:
            print(report.summary(), file=sys.stderr)
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format).train()
    if distributed:  # BN that trains normalises with the statistics of the whole (global) batch
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if dev.type == "cuda" else \
            DistributedBatchNorm2d.convert(model)
    criterion = FCPoseCriterion.from_config(cfg)
    step_module: nn.Module = TrainStep(model, criterion)
    if distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    use_amp = s.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_iter, skipped, state = 0, 0, {}
    if resume and last_path.exists():
        state = safe_load(last_path)
        if not isinstance(state, dict) or "optimizer" not in state:
            raise CheckpointError(f"{last_path} is not a resumable training checkpoint")
        load_state(model, state["model"], str(last_path))
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{last_path}: its optimizer state does not fit this run's trainable parameters "
                                  f"({exc}); resume with the same config, --init and backbone weights as the run "
                                  f"that wrote it") from None
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iter, skipped = int(state["step"]), int(state.get("skipped_steps", 0))
        if main:
            print(f"resuming from {last_path} at iteration {start_iter}", file=sys.stderr)
    elif resume and main:
        print(f"note: --resume given but {last_path} does not exist; starting from scratch", file=sys.stderr)
    ema = ModelEMA(model, s.ema_decay) if s.ema_decay > 0 else None
    if ema is not None and start_iter > 0:
        if state.get("ema"):
            ema.load_state_dict(state["ema"])
        elif main:
            print(f"note: {last_path} holds no weight average; solver.ema_decay starts one from the resumed "
                  "weights", file=sys.stderr)
    loop = _LoopState(optimizer, scheduler, scaler, ema)

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    dist.barrier()

    dataset = CocoKeypointDataset(data, images, cfg.keypoints, TrainTransform.from_config(cfg), seed=s.seed,
                                  crowd=cfg.input.crowd, filter_empty=cfg.input.filter_empty,
                                  min_keypoints=cfg.input.min_keypoints_per_image,
                                  min_box_size=cfg.input.min_box_size)
    if len(dataset) == 0:
        raise ConfigError(f"{data} has no images to train on")
    sampler = IterationSampler(len(dataset), s.ims_per_batch, rank=rank, world=world, seed=s.seed,
                               start_iter=start_iter, max_iter=s.max_iter)
    workers = clamp_workers(s.num_workers if num_workers is None else num_workers, verbose=main)
    # Workers are spawned, not forked: forking a process that holds native thread pools (OpenMP, oneDNN,
    # OpenVINO) is unsafe.
    loader = DataLoader(EpochIndexed(dataset), batch_size=sampler.local, sampler=sampler, collate_fn=collate,
                        num_workers=workers, pin_memory=dev.type == "cuda", persistent_workers=False,
                        multiprocessing_context="spawn" if workers > 0 else None)

    logger = _Logger(out_dir, main)
    metrics: dict = {}
    last_losses: dict = {}
    bar = tqdm(total=s.max_iter, initial=start_iter, desc="train", unit="it", disable=not (progress and main),
               file=sys.stderr, dynamic_ncols=True)
    params = [p for p in model.parameters() if p.requires_grad]
    iteration = start_iter
    tic = time.perf_counter()
    for batch in loader:
        x, sizes = to_model_input(model, batch["images"], dev)
        x = x.contiguous(memory_format=memory_format)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
            losses = step_module(x, batch["targets"], sizes)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        grad_norm = clip_gradients(params, cfg)
        # Gradients are all-reduced, so every rank takes the same decision.
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(total.detach()))
        finite = not bool(dist.reduce_max(torch.tensor(0.0 if finite else 1.0, device=dev)) > 0)
        if finite:
            scaler.step(optimizer)
            if ema is not None:
                ema.update()
        else:
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
            if main:
                bad = {k: round(float(v.detach()), 4) for k, v in losses.items()}
                tqdm.write(f"warning: iteration {iteration}: non-finite loss or gradient, step skipped "
                           f"({skipped} so far): {bad}", file=sys.stderr)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]  # the lr this step used
        scheduler.step()
        iteration += 1

        values = dist.reduce_mean_dict({**losses, "total_loss": total})
        last_losses = values
        if loss_log is not None:
            loss_log.append((iteration - 1, values))
        if main:
            bar.update(1)
            bar.set_postfix(loss=f"{values['total_loss']:.3f}", lr=f"{lr:.2e}")
        if main and (iteration % s.log_period == 0 or iteration == s.max_iter or iteration == start_iter + 1):
            elapsed = time.perf_counter() - tic
            logger.log(iteration, {**values, "lr": lr, "grad_norm": float(grad_norm),
                                   "skipped_steps": skipped, "sec_per_iter": elapsed / (iteration - start_iter)})
        if s.checkpoint_period > 0 and iteration % s.checkpoint_period == 0 and iteration < s.max_iter:
            _save_last(model, out_dir, cfg, iteration=iteration, skipped=skipped, loop=loop, metrics=metrics,
                       main=main)
        if (eval_data and s.eval_period > 0 and iteration % s.eval_period == 0 and iteration < s.max_iter):
            metrics = _evaluate(final_model(model, ema), cfg, eval_data, eval_images or images, dev, progress, main,
                                logger, iteration)
    bar.close()

    if eval_data:
        metrics = _evaluate(final_model(model, ema), cfg, eval_data, eval_images or images, dev, progress, main,
                            logger, iteration)
    _save_last(model, out_dir, cfg, iteration=iteration, skipped=skipped, loop=loop, metrics=metrics,
               main=main)
    if main:
        save_checkpoint(final_model(model, ema), out_dir / "model_final.pt", cfg=cfg, step=iteration,
                        trained_on=trained_on_label(data),
                        metrics=metrics, skipped_steps=skipped, weight_average=ema is not None)
        print(f"trained {iteration} iterations ({skipped} skipped) -> {out_dir / 'model_final.pt'}", file=sys.stderr)
    logger.close()
    dist.barrier()
    return TrainResult(out_dir, iteration, skipped, last_losses, metrics, final_model(model, ema))


def trained_on_label(ann_file: str) -> str:
    """What a checkpoint says it was trained on: ``"synthetic"`` for an ``fcpose synth`` dataset (``predict``
    then warns when the model meets real photos), else the annotation file's name."""
    from ..data.synthetic import SYNTH_DESCRIPTION

    try:
        info = json.loads(Path(ann_file).read_text()).get("info", {})
    except (OSError, ValueError, AttributeError):
        info = {}
    if isinstance(info, dict) and info.get("description") == SYNTH_DESCRIPTION:
        return "synthetic"
    return Path(ann_file).name


def final_model(model: nn.Module, ema: ModelEMA | None) -> nn.Module:
    """What training delivers: the weight average when there is one, else the (unwrapped) model."""
    return ema.module if ema is not None else unwrap_model(model)


@dataclass
class _LoopState:
    """What ``last.pt`` holds besides the weights and the config: enough to resume the loop exactly."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None


def _save_last(model: nn.Module, out_dir: Path, cfg: FCPoseConfig, *, iteration: int, skipped: int,
               loop: _LoopState, metrics: dict, main: bool) -> None:
    """Write ``out_dir/last.pt`` (main process; every rank waits for it)."""
    if main:
        extra = {"ema": loop.ema.state_dict()} if loop.ema is not None else {}
        save_checkpoint(model, out_dir / "last.pt", cfg=cfg, step=iteration, metrics=metrics,
                        skipped_steps=skipped, optimizer=loop.optimizer.state_dict(),
                        scheduler=loop.scheduler.state_dict(), scaler=loop.scaler.state_dict(), **extra)
    dist.barrier()


def _evaluate(model, cfg, ann_file, image_dir, dev, progress, main, logger, iteration) -> dict:
    """COCO AP of the current weights (sharded over ranks); the model is put back in training mode."""
    from ..inference.predictor import Predictor
    from .evaluate import format_metrics, predict_dataset
    from .evaluation import evaluate_keypoints

    bare = unwrap_model(model)
    predictor = Predictor(bare, device=dev)
    results = predict_dataset(predictor, ann_file, image_dir, progress=False)
    metrics = {}
    if main:
        metrics = evaluate_keypoints(ann_file, results, sigmas=cfg.keypoints.sigmas)
        tqdm.write(f"evaluation at iteration {iteration}:\n{format_metrics(metrics)}", file=sys.stderr)
        logger.log(iteration, {f"{kind}/{k}": v for kind, d in metrics.items() for k, v in d.items()})
    bare.train()
    return dist.broadcast_object(metrics)


def run_train(*, config: str, data: str, images: str, output: str, overrides: list[str] | None = None,
              resume: bool = False, max_iter: int | None = None, batch_size: int | None = None,
              eval_data: str | None = None, eval_images: str | None = None, device: str = "cpu",
              num_workers: int | None = None, progress: bool = True, init: str | None = None) -> int:
    """``fcpose train``."""
    from ..config import load_config

    extra = list(overrides or [])
    if max_iter is not None:
        extra.append(f"solver.max_iter={max_iter}")
    if batch_size is not None:
        extra.append(f"solver.ims_per_batch={batch_size}")
    cfg = load_config(config, extra)
    try:
        train(cfg, data=data, images=images, output=output, resume=resume, eval_data=eval_data,
              eval_images=eval_images, device=device, num_workers=num_workers, progress=progress, init=init)
    finally:
        dist.cleanup()
    return 0
