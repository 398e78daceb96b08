"""``fcpose train``: the training loop (:class:`TrainSession`), single process or ``torchrun`` DDP.

Optimiser pieces are in :mod:`fcpose.engine.optim`, batches in :mod:`fcpose.engine.sampling`. Mixed precision
(``solver.precision``) covers the network only; a non-finite loss or gradient *skips the step* (counted, warned at the
next log line), a run that keeps skipping or whose weights become non-finite *stops* (:class:`TrainingDiverged`). The
host waits for the device only every ``log_period`` iterations. Checkpoints are atomic and hold everything to continue
exactly (:class:`LoopState`): ``--resume`` gives the same losses as an uninterrupted run, because the data of iteration
``t`` is a pure function of (seed, t) (see :mod:`fcpose.engine.sampling`)."""

from __future__ import annotations

import copy
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed as dist
from ..config import FCPoseConfig, to_dict
from ..data.coco import CocoKeypointDataset, keypoint_set_from_coco
from ..data.collate import collate, to_model_input
from ..errors import CheckpointError, FCPoseError
from ..fileio import atomic_write_text
from ..loss import FCPoseCriterion
from ..model.fcpose import FCPose, build_model
from ..model.norm import DistributedBatchNorm2d, calibrate_frozen_bn
from ..precision import Precision, check_precision, default_training_precision, resolve_device
from ..weights.checkpoint import init_from_checkpoint, load_state, save_checkpoint, unwrap_model
from ..weights.files import safe_load
from ..weights.imagenet import load_imagenet_weights
from .optim import ModelEMA, build_optimizer, build_scheduler, clip_gradients, reads_skip_flag, step_where
from .sampling import EpochIndexed, IterationSampler, build_train_dataset, build_train_loader
from .train_checks import fit_backbone_to_scratch, fit_keypoints_to_data, fit_schedule


# ---- The loss as one module ------------------------------------------------------------------
class TrainStep(nn.Module):
    """Model + criterion as one module, so that DDP's forward covers the whole loss computation (the controller and
    dynamic heads run inside the criterion). ``precision`` (:class:`~fcpose.precision.Precision`) autocasts the
    network's forward only; its outputs are cast to float32 before the criterion, so the target assignment, the losses,
    the controller and the dynamic heads always compute in float32 whatever the network ran in."""

    def __init__(self, model: FCPose, criterion: FCPoseCriterion, precision: Precision | None = None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.precision = precision

    def forward(self, images: torch.Tensor, targets: list[dict], image_sizes: list[tuple[int, int]]):
        if self.precision is None or self.precision.name == "fp32":
            dense = self.model(images)
        else:
            with self.precision.autocast():
                dense = self.model(images)
            dense = dense.float()
        return self.criterion(self.model, dense, targets, image_sizes)


# ---- Logging ---------------------------------------------------------------------------------
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
    skipped_steps: int  # steps skipped for a non-finite loss or gradient (fp16 scale calibration not included)
    last_losses: dict
    metrics: dict
    model: FCPose  # the trained model (unwrapped; the weight average when solver.ema_decay > 0)
    scale_reductions: int = 0  # fp16 only: steps skipped while GradScaler calibrated its loss scale


class TrainingDiverged(FCPoseError):
    """Training stopped because it diverged (too many skipped steps, or non-finite weights). Every rank stops;
    ``quiet`` is set on all but the main one, so that the command line says it once."""

    quiet = False


class TrainingInterrupted(FCPoseError):
    """Training stopped on SIGINT/SIGTERM after finishing its step and writing ``last.pt``; ``exit_code`` is
    128 + the signal number (130, 143), what shells and schedulers expect."""

    quiet = False  # as TrainingDiverged's: set on all ranks but the main one

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class StopSignals:
    """SIGINT/SIGTERM handlers for the loop: the first signal only sets :attr:`signum` (the loop finishes its step,
    writes ``last.pt`` and stops); a second one raises :class:`KeyboardInterrupt` at once (atomic writes in flight
    remove their temporary files). Installed only in the main thread; the previous handlers come back on exit."""

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---- The resumable state: one owner for what last.pt holds besides the weights and the config
@dataclass
class LoopState:
    """Everything the loop needs to continue exactly, and its (de)serialisation: ``state_dict()`` is what the
    checkpoint writer stores next to the weights, ``load_state_dict()`` what ``--resume`` restores."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    iteration: int = 0
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    scale_reductions: int = 0  # fp16: steps skipped while the loss scale calibrated
    metrics: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        out = {"step": self.iteration, "skipped_steps": self.skipped, "scale_reductions": self.scale_reductions,
               "metrics": self.metrics, "optimizer": self.optimizer.state_dict(),
               "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            out["ema"] = self.ema.state_dict()
        return out

    def load_state_dict(self, state: dict, source: str, *, verbose: bool) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: its optimizer state does not fit this run's trainable parameters "
                                  f"({exc}); resume with the same config, --init and backbone weights as the run "
                                  f"that wrote it") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["step"])
        self.skipped = int(state.get("skipped_steps", 0))
        self.scale_reductions = int(state.get("scale_reductions", 0))
        self.metrics = dict(state.get("metrics") or {})
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            elif verbose:
                print(f"note: {source} holds no weight average; solver.ema_decay starts one from the resumed "
                      "weights", file=sys.stderr)


class StepAccounting:
    """Per-step outcome flags kept on the device, read by the host only when :meth:`collect` is called (every
    ``log_period``): no host synchronisation per step.

    A skipped step is *calibration* when it is an fp16 run, the loss was finite and the loss scale was >= 1 (the
    scaled gradients overflowed: GradScaler halves the scale and the next step retries; normal in the first steps
    of every fp16 run). Every other skipped step is *real* (a non-finite loss, or gradients that overflow even
    unscaled) and counts towards the divergence window of the last ``window`` steps."""

    def __init__(self, window: int, device: torch.device):
        self.window = int(window)
        self.flags = torch.zeros(self.window, dtype=torch.bool, device=device)  # real skips, ring buffer
        self.real = torch.zeros((), dtype=torch.long, device=device)  # since the last collect
        self.calibration = torch.zeros((), dtype=torch.long, device=device)
        self.first_real: int | None = None  # host side, filled by collect

    def record(self, iteration: int, finite: torch.Tensor, loss_finite: torch.Tensor,
               scale: torch.Tensor | None) -> None:
        skipped = ~finite
        if scale is None:  # not fp16: every skip is real
            real = skipped
        else:
            calib = skipped & loss_finite & (scale >= 1.0)
            real = skipped & ~calib
            self.calibration += calib
        self.flags[iteration % self.window] = real
        self.real += real

    def collect(self) -> tuple[int, int, int]:
        """(real skips, calibration skips since the last call, real skips in the window); one host sync."""
        values = torch.stack([self.real, self.calibration, self.flags.sum()]).tolist()
        self.real.zero_()
        self.calibration.zero_()
        return int(values[0]), int(values[1]), int(values[2])


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite (one fused norm per dtype and one host sync)."""
    floats = [t for t in tensors if t.is_floating_point() and t.numel()]
    if not floats:
        return True
    norms = torch._foreach_norm([t.float() if t.dtype != torch.float32 else t for t in floats], float("inf"))
    return bool(torch.isfinite(torch.stack(norms)).all())


def _format_duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


@dataclass(frozen=True)
class _Process:
    """Where this process trains: its device, whether the run is distributed (DDP), its rank among ``world``
    processes, and whether it is the main one (the one that prints and writes files)."""

    device: torch.device
    distributed: bool
    rank: int
    world: int
    main: bool

    @classmethod
    def start(cls, device: str) -> _Process:
        """Join the process group when launched by ``torchrun``; ``device`` is this rank's device."""
        distributed = dist.init_distributed(device)
        rank, world, main = dist.get_rank(), dist.get_world_size(), dist.is_main_process()
        return cls(resolve_device(dist.local_device(device)), distributed, rank, world, main)


# ---- The session: setup, one step, the loop, checkpoints -------------------------------------
class TrainSession:
    """One training run. :meth:`setup` builds everything (config fitting, model, DDP, optimiser, resume, data),
    :meth:`train_step` is one iteration, :meth:`run` the loop, :meth:`save_last` / :meth:`save_final` the
    checkpoints. :func:`train` strings them together."""

    def __init__(self, *, cfg: FCPoseConfig, device: torch.device, precision: Precision, model: FCPose,
                 step_module: nn.Module, loop: LoopState, loader: DataLoader, out_dir: Path, data: str,
                 images: str, main: bool, progress: bool, memory_format: torch.memory_format):
        self.cfg, self.device, self.precision = cfg, device, precision
        self.model, self.step_module, self.loop = model, step_module, loop
        self.optimizer, self.scheduler, self.scaler, self.ema = loop.optimizer, loop.scheduler, loop.scaler, loop.ema
        self.loader, self.out_dir, self.data, self.images = loader, out_dir, data, images
        self.main, self.progress, self.memory_format = main, progress, memory_format
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fused_skip = reads_skip_flag(self.optimizer)
        self.accounting = StepAccounting(cfg.solver.skip_window, device)
        self.logger = _Logger(out_dir, main)
        self.signals = StopSignals()  # train() passes the installed handlers
        self.lr = 0.0  # the lr of the last step (a host float)
        self._scale_used: torch.Tensor | None = None  # fp16: the loss scale of the last backward (device)
        self._tic, self._start, self._last_log_it = time.perf_counter(), loop.iteration, loop.iteration

    # -- setup: the steps in the order they run --------------------------------------------------
    @classmethod
    def setup(cls, cfg: FCPoseConfig, *, data: str, images: str, output: str, resume: bool = False,
              init: str | None = None, device: str = "cpu", num_workers: int | None = None,
              progress: bool = True) -> TrainSession:
        """Everything a run needs: the process (DDP), the precision, the config fitted to the data, the model and
        its first weights, the data, the loss module, the optimiser and loop state (resumed from ``last.pt``), the
        saved config and the loader."""
        cfg = copy.deepcopy(cfg)
        proc = _Process.start(device)
        out_dir = Path(output)
        last_path = out_dir / "last.pt"
        precision = cls._precision(cfg, proc)
        has_pretrained = cls._fit_config(cfg, data, init, verbose=proc.main)
        state = cls._resume_state(last_path) if resume and last_path.exists() else None
        model = cls._new_model(cfg, init if state is None else None, imagenet=not resume, verbose=proc.main)
        model, memory_format = cls._place_model(model, cfg, proc)
        dataset = build_train_dataset(cfg, data, images)
        if state is None and not has_pretrained and cfg.model.backbone.norm == "FrozenBN":
            _calibrate_backbone(model, dataset, cfg, proc, precision)
        step_module = cls._step_module(model, cfg, precision, proc)
        loop = cls._loop_state(model, cfg, precision, state, str(last_path), resume=resume, verbose=proc.main)
        cls._write_config(cfg, out_dir, proc.main)
        loader = build_train_loader(cfg, dataset, proc.device, rank=proc.rank, world=proc.world,
                                    start_iter=loop.iteration, num_workers=num_workers, main=proc.main)
        return cls(cfg=cfg, device=proc.device, precision=precision, model=model, step_module=step_module, loop=loop,
                   loader=loader, out_dir=out_dir, data=data, images=images, main=proc.main, progress=progress,
                   memory_format=memory_format)

    @staticmethod
    def _precision(cfg: FCPoseConfig, proc: _Process) -> Precision:
        """``solver.precision`` on this device (``auto``: bf16 where the GPU has it, see the precision module)."""
        dev, name = proc.device, cfg.solver.precision
        precision = Precision(dev, default_training_precision(dev) if name == "auto" else name)
        check_precision(dev, precision.name, require_native_cpu=False)
        if precision.name == "fp16" and dev.type == "cpu" and proc.main:
            print("note: fp16 training on the CPU is emulated and slow; use bf16 or fp32 there", file=sys.stderr)
        return precision

    @staticmethod
    def _fit_config(cfg: FCPoseConfig, data: str, init: str | None, *, verbose: bool) -> bool:
        """Fit the config (in place) to the data and the starting weights, before anything is built or saved, so
        that checkpoints and a resumed run see the same config; returns whether training starts from pretrained
        weights. The dataset defines the keypoint set; the model sizes its heads and controller from it."""
        fit_keypoints_to_data(cfg, keypoint_set_from_coco(data, verbose=verbose), data, verbose=verbose)
        cfg.validate()
        has_pretrained = bool(cfg.model.backbone.weights) or init is not None
        fit_backbone_to_scratch(cfg, has_pretrained=has_pretrained, verbose=verbose)
        fit_schedule(cfg, verbose=verbose)
        return has_pretrained

    @staticmethod
    def _resume_state(last_path: Path) -> dict:
        """The contents of ``last.pt``, which must be a training checkpoint (it holds the optimiser's state)."""
        state = safe_load(last_path)
        if not isinstance(state, dict) or "optimizer" not in state:
            raise CheckpointError(f"{last_path} is not a resumable training checkpoint")
        return state

    @staticmethod
    def _new_model(cfg: FCPoseConfig, init: str | None, *, imagenet: bool, verbose: bool) -> FCPose:
        """The model, seeded by ``solver.seed``, with its first weights: ``init``'s checkpoint, else (``imagenet``)
        the backbone's ImageNet weights when the config names them, else random."""
        torch.manual_seed(cfg.solver.seed)
        model = build_model(cfg)
        if init:
            report = init_from_checkpoint(model, init)
        elif cfg.model.backbone.weights and imagenet:
            report = load_imagenet_weights(model.backbone, cfg.model.backbone.weights)
        else:
            return model
        if verbose:
            print("\n".join(report.lines()), file=sys.stderr)
        return model

    @staticmethod
    def _place_model(model: FCPose, cfg: FCPoseConfig, proc: _Process) -> tuple[FCPose, torch.memory_format]:
        """The model on the device in training mode and its memory format (``solver.channels_last``, default: on
        CUDA); with DDP its trained BN normalises with the statistics of the whole (global) batch."""
        dev, channels_last = proc.device, cfg.solver.channels_last
        if channels_last is None:
            channels_last = dev.type == "cuda"
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(dev, memory_format=memory_format).train()
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # multi-scale training: one autotune per input size
        if proc.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if dev.type == "cuda" else \
                DistributedBatchNorm2d.convert(model)
        return model, memory_format

    @staticmethod
    def _step_module(model: FCPose, cfg: FCPoseConfig, precision: Precision, proc: _Process) -> nn.Module:
        """:class:`TrainStep` around the (``solver.compile``: compiled) network, wrapped in DDP when distributed."""
        network = _compiled(model, proc.main) if cfg.solver.compile else model
        step_module: nn.Module = TrainStep(network, FCPoseCriterion.from_config(cfg), precision)
        if proc.distributed:
            dev = proc.device
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[dev.index] if dev.type == "cuda" else None)
        return step_module

    @staticmethod
    def _loop_state(model: FCPose, cfg: FCPoseConfig, precision: Precision, state: dict | None, source: str, *,
                    resume: bool, verbose: bool) -> LoopState:
        """The optimiser, lr schedule, loss scaler (fp16) and weight average; with ``state`` (``last.pt``) the
        model's weights and all of these continue from it."""
        optimizer = build_optimizer(model, cfg)
        scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.needs_scaler)
        if state is not None:
            load_state(model, state["model"], source)
        # on resume the average starts from the resumed weights unless the checkpoint holds one
        ema = ModelEMA(model, cfg.solver.ema_decay) if cfg.solver.ema_decay > 0 else None
        loop = LoopState(optimizer, build_scheduler(optimizer, cfg), scaler, ema)
        if state is not None:
            loop.load_state_dict(state, source, verbose=verbose)
            if verbose:
                print(f"resuming from {source} at iteration {loop.iteration}", file=sys.stderr)
        elif resume and verbose:
            print(f"note: --resume given but {source} does not exist; starting from scratch", file=sys.stderr)
        return loop

    @staticmethod
    def _write_config(cfg: FCPoseConfig, out_dir: Path, main: bool) -> None:
        """``config.yaml``, the fitted config (main process; every rank waits for it)."""
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        dist.barrier()

    # -- one step ------------------------------------------------------------------------------
    def forward_loss(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The batch's named losses and their sum (the network under the precision's autocast, the rest fp32)."""
        x, sizes = to_model_input(self.model, batch["images"], self.device)
        x = x.contiguous(memory_format=self.memory_format)
        losses = self.step_module(x, batch["targets"], sizes)
        return losses, sum(losses.values())

    def backward_step(self, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backward (scaled in fp16), unscale, clip: returns the gradient norm before clipping, the device-side flag
        "this step may be taken" (a finite loss and finite gradients on every rank) and "this rank's loss is finite"."""
        self.optimizer.zero_grad(set_to_none=True)
        scaled = self.scaler.scale(total)
        # The loss scale this backward used, as a device tensor (get_scale() would wait for the device).
        # (read by the accounting before scaler.update() changes it: no copy needed)
        self._scale_used = self.scaler._scale if self.scaler.is_enabled() else None
        scaled.backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(self.params, self.cfg)
        # Gradients are all-reduced, so every rank takes the same decision.
        loss_finite = torch.isfinite(total.detach())
        bad = ~(torch.isfinite(grad_norm) & loss_finite)
        finite = dist.reduce_max(bad.to(torch.float32)) == 0
        return grad_norm, finite, loss_finite

    def optimizer_step(self, finite: torch.Tensor) -> None:
        """Apply the step where ``finite`` (a device flag) says so (:func:`~fcpose.engine.optim.step_where`), then
        the loss scale, the weight average and the lr."""
        step_where(self.optimizer, finite, fused=self.fused_skip)
        if self.ema is not None:
            self.ema.update(finite)
        if self.scaler.is_enabled():
            self.scaler.update()
        self.scheduler.step()

    def train_step(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One iteration: ``(losses, grad_norm, finite)``, all device tensors (nothing waits for the device)."""
        self.lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses (a host float)
        losses, total = self.forward_loss(batch)
        grad_norm, finite, loss_finite = self.backward_step(total)
        self.accounting.record(self.loop.iteration, finite, loss_finite, self._scale_used)
        self.optimizer_step(finite)
        self.loop.iteration += 1
        return {**losses, "total_loss": total.detach()}, grad_norm, finite
    # -- the loop ------------------------------------------------------------------------------
    def run(self, *, eval_data: str | None = None, eval_images: str | None = None,
            loss_log: list | None = None) -> dict:
        """Iterate to ``solver.max_iter``; returns the last logged (rank-averaged) losses. The host reads the
        device only every ``log_period`` iterations (losses, skipped steps, the divergence checks), at
        checkpoints and evaluations, and at every step when ``loss_log`` is given (tests)."""
        s, loop = self.cfg.solver, self.loop
        start = loop.iteration
        bar = tqdm(total=s.max_iter, initial=start, desc="train", unit="it",
                   disable=not (self.progress and self.main), file=sys.stderr, dynamic_ncols=True)
        self._tic, self._start, self._last_log_it = time.perf_counter(), start, start
        last: dict = {}
        saved_at = time.monotonic()
        try:
            for batch in self.loader:
                losses, grad_norm, _ = self.train_step(batch)
                it = loop.iteration  # iterations done
                if self.main:
                    bar.update(1)
                # 2: a stop signal; 1: a time-based checkpoint is due (rank 0's clock). Every rank takes the same
                # decision at the same iteration: with DDP one tiny all-reduce at the iterations that read the
                # device anyway (log lines), so a stop waits at most log_period steps there; none in one process.
                due = s.checkpoint_minutes > 0 and time.monotonic() - saved_at >= 60.0 * s.checkpoint_minutes
                event = 2 if self.signals.signum else (1 if due and self.main else 0)
                if dist.is_distributed():
                    shared = it % s.log_period == 0 or it == s.max_iter
                    event = int(dist.reduce_max(torch.tensor(float(event), device=self.device))) if shared else 0
                if event == 2:
                    self._log(it, losses, grad_norm, bar)
                    self.save_last()
                    raise self._interrupted(it)
                if event == 1 and it < s.max_iter:
                    self.save_last()
                    saved_at = time.monotonic()
                if loss_log is not None:
                    last = dist.reduce_mean_dict(losses)
                    loss_log.append((it - 1, last))
                if it % s.log_period == 0 or it == s.max_iter or it == start + 1:
                    last = self._log(it, losses, grad_norm, bar)
                if s.checkpoint_period > 0 and it % s.checkpoint_period == 0 and it < s.max_iter:
                    self.save_last()
                    saved_at = time.monotonic()
                if eval_data and s.eval_period > 0 and it % s.eval_period == 0 and it < s.max_iter:
                    self.evaluate(eval_data, eval_images)
        finally:
            bar.close()
        self._check_divergence(loop.iteration)
        return last

    def _log(self, it: int, losses: dict, grad_norm: torch.Tensor, bar) -> dict:
        """The periodic host read: losses averaged over ranks, skipped steps, the divergence checks, one log line."""
        s, loop = self.cfg.solver, self.loop
        values = dist.reduce_mean_dict(losses)
        window = self._collect_skips(it)
        lr = self.lr
        elapsed = time.perf_counter() - self._tic
        sec_per_iter = elapsed / max(1, it - self._start)
        if self.main:
            bar.set_postfix(loss=f"{values['total_loss']:.3f}", lr=f"{lr:.2e}")
            self.logger.log(it, {**values, "lr": lr, "grad_norm": float(grad_norm), "skipped_steps": loop.skipped,
                                 "scale_reductions": loop.scale_reductions, "sec_per_iter": sec_per_iter})
            if not self.progress:
                terms = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in values.items() if k != "total_loss")
                eta = _format_duration(sec_per_iter * (s.max_iter - it))
                print(f"iter {it}/{s.max_iter}  loss {values['total_loss']:.4f} ({terms})  lr {lr:.3g}  "
                      f"{sec_per_iter:.3f} s/it  eta {eta}" + (f"  skipped {loop.skipped}" if loop.skipped else ""),
                      file=sys.stderr, flush=True)
        self._check_divergence(it, window=window)
        return values

    def _collect_skips(self, it: int) -> int:
        """Read the skip counters (one host sync): add them to the loop's totals, warn about real skips since the
        last read (main process), and return the real skips in the divergence window."""
        real, calib, window = self.accounting.collect()
        loop = self.loop
        loop.skipped += real
        loop.scale_reductions += calib
        if real and self.main:
            tqdm.write(f"warning: {real} step{'s' * (real > 1)} skipped for a non-finite loss or gradient in "
                       f"iterations {self._last_log_it}-{it - 1} ({loop.skipped} so far)", file=sys.stderr)
        self._last_log_it = it
        return window

    def _interrupted(self, it: int) -> TrainingInterrupted:
        signum = self.signals.signum or signal.SIGTERM
        name = signal.Signals(signum).name
        exc = TrainingInterrupted(f"stopped by {name} at iteration {it}: {self.out_dir / 'last.pt'} holds the run; "
                                  f"continue with the same command and --resume", signum)
        exc.quiet = not self.main
        return exc

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def _check_divergence(self, it: int, window: int | None = None) -> None:
        """Raise :class:`TrainingDiverged` when too many recent steps were skipped or a weight is non-finite."""
        s = self.cfg.solver
        if window is None:  # not collected by the caller
            window = self._collect_skips(it)
        limit = s.max_skipped_fraction * s.skip_window
        if window > limit:
            reason = (f"{window} of the last {min(it, s.skip_window)} steps were skipped for a non-finite loss or "
                      f"gradient (limit: {s.max_skipped_fraction:.0%} of {s.skip_window})")
        elif not _all_finite(self._state_tensors()):
            reason = "a parameter or buffer of the model became non-finite"
        else:
            return
        kept = self.out_dir / "last.pt"
        saved = f"{kept} holds the last good state" if kept.exists() else "no checkpoint had been written yet"
        exc = TrainingDiverged(f"training diverged at iteration {it}: {reason}; no model_final.pt written, {saved} "
                               "(try a lower solver.base_lr, solver.precision=bf16 or fp32, or gradient clipping)")
        exc.quiet = not self.main
        raise exc

    # -- checkpoints ---------------------------------------------------------------------------
    def save_last(self) -> None:
        """Write ``last.pt`` (main process; every rank waits) after checking that the weights are finite, so a
        diverged run never overwrites the last good checkpoint."""
        self._check_divergence(self.loop.iteration)
        if self.main:
            save_checkpoint(self.model, self.out_dir / "last.pt", cfg=self.cfg, **self.loop.state_dict())
        dist.barrier()

    def save_final(self) -> Path:
        """``last.pt`` and ``model_final.pt`` (the weight average when there is one)."""
        self.save_last()
        path = self.out_dir / "model_final.pt"
        if self.main:
            loop = self.loop
            save_checkpoint(self.final_model, path, cfg=self.cfg, step=loop.iteration,
                            trained_on=trained_on_label(self.data), metrics=loop.metrics, skipped_steps=loop.skipped,
                            scale_reductions=loop.scale_reductions, weight_average=self.ema is not None)
            calib = (f"; {loop.scale_reductions} fp16 loss-scale calibration steps (normal; final scale "
                     f"{self.scaler.get_scale():.0f})" if self.scaler.is_enabled() else "")
            print(f"trained {loop.iteration} iterations ({loop.skipped} skipped{calib}) -> {path}", file=sys.stderr)
        return path

    @property
    def final_model(self) -> nn.Module:
        return final_model(self.model, self.ema)

    def evaluate(self, eval_data: str, eval_images: str | None) -> dict:
        self.loop.metrics = _evaluate(self.final_model, self.cfg, eval_data, eval_images or self.images, self.device,
                                      self.progress, self.main, self.logger, self.loop.iteration)
        return self.loop.metrics

    def close(self) -> None:
        self.logger.close()


def _calibrate_backbone(model: FCPose, dataset: CocoKeypointDataset, cfg: FCPoseConfig, proc: _Process,
                        precision: Precision) -> None:
    """From scratch with FrozenBN: the frozen norms' statistics from the first global batch (each rank its share,
    averaged over ranks), so that the backbone normalises (:func:`~fcpose.model.norm.calibrate_frozen_bn`)."""
    s = cfg.solver
    items = EpochIndexed(dataset)
    sampler = IterationSampler(len(dataset), s.ims_per_batch, rank=proc.rank, world=proc.world, seed=s.seed, max_iter=1)
    batch = collate([items[key] for key in sampler])
    x, _ = to_model_input(model, batch["images"], proc.device)
    count = calibrate_frozen_bn(model.backbone, lambda: model.backbone(x), dist.reduce_mean)
    if proc.main:
        print(f"note: {count} FrozenBN layers of the backbone take their statistics from the first batch "
              f"({len(batch['images']) * proc.world} images)", file=sys.stderr)
        if precision.name == "fp16":
            print("warning: solver.precision=fp16 with a FrozenBN backbone trained from scratch: nothing in the "
                  "backbone and FPN normalises with trained statistics, and their activations outgrow float16's "
                  "65,504 within a few steps (README: fp16 and the NaN of the first GPU run); use bf16 (fp32's "
                  "range) or model.backbone.norm=GN", file=sys.stderr)


def _compiled(model: nn.Module, verbose: bool) -> nn.Module:
    """``torch.compile(model)`` for ``solver.compile``; the eager model, with a note, when compiling is refused."""
    try:
        return torch.compile(model)
    except Exception as exc:  # unsupported Python/platform
        if verbose:
            print(f"note: solver.compile: torch.compile is not available here ({type(exc).__name__}: {exc}); "
                  "training the eager model", file=sys.stderr)
        return model


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

    A run that diverges raises :class:`TrainingDiverged` (``last.pt`` keeps the last good state, no ``model_final.pt``).
    SIGINT or SIGTERM finishes the current step, writes ``last.pt`` and raises :class:`TrainingInterrupted` (a second
    signal aborts at once); ``solver.checkpoint_minutes`` writes ``last.pt`` at least that often. ``loss_log``, if
    given, receives ``(iteration, {loss name: float})`` for every iteration (tests)."""
    if eval_data:
        _check_eval_data(eval_data)
    with StopSignals() as signals:
        session = TrainSession.setup(cfg, data=data, images=images, output=output, resume=resume, init=init,
                                     device=device, num_workers=num_workers, progress=progress)
        session.signals = signals
        return _run_session(session, eval_data=eval_data, eval_images=eval_images, loss_log=loss_log)


def _run_session(session: TrainSession, *, eval_data: str | None, eval_images: str | None,
                 loss_log: list | None) -> TrainResult:
    try:
        last = session.run(eval_data=eval_data, eval_images=eval_images, loss_log=loss_log)
        if eval_data:
            session.evaluate(eval_data, eval_images)
        session.save_final()
    finally:
        session.close()
    dist.barrier()
    loop = session.loop
    return TrainResult(session.out_dir, loop.iteration, loop.skipped, last, loop.metrics, session.final_model,
                       loop.scale_reductions)


def trained_on_label(ann_file: str) -> str:
    """What a checkpoint says it was trained on: ``"synthetic"`` for an ``fcpose synth`` dataset (``predict``
    then warns when the model meets real photos), else the annotation file's name."""
    from ..config import is_synthetic_dataset

    return "synthetic" if is_synthetic_dataset(ann_file) else Path(ann_file).name


def final_model(model: nn.Module, ema: ModelEMA | None) -> nn.Module:
    """What training delivers: the weight average when there is one, else the (unwrapped) model."""
    return ema.module if ema is not None else unwrap_model(model)


def _check_eval_data(ann_file: str) -> None:
    """Read ``--eval-data`` and the protocol it will be scored with before training, so that a missing, malformed
    or unscorable file (CrowdPose's without xtcocotools) stops the run at once, not at its first evaluation."""
    from ..data.coco import read_coco_json
    from .evaluation import resolve_protocol

    resolve_protocol("auto", read_coco_json(ann_file))


def _evaluate(model, cfg, ann_file, image_dir, dev, progress, main, logger, iteration) -> dict:
    """AP of the current weights (sharded over ranks) under the protocol ``fcpose eval`` chooses for the file
    (CrowdPose's for CrowdPose's files, else COCO's); the model is put back in training mode."""
    from ..inference.predictor import Predictor
    from .evaluate import dataset_images, format_metrics, predict_dataset
    from .evaluation import evaluate_keypoints, load_gt

    bare = unwrap_model(model)
    predictor = Predictor(bare, device=dev)
    gt = load_gt(ann_file)  # once: the images to predict and the ground truth to score
    items = dataset_images(ann_file, image_dir, gt)
    results = predict_dataset(predictor, ann_file, image_dir, progress=False, items=items)
    metrics = {}
    if main:
        metrics = evaluate_keypoints(gt, results, sigmas=cfg.keypoints.sigmas, protocol="auto")
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
