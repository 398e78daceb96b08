"""Which images go in which training batch: the iteration-deterministic sampler, the dataset view it indexes and
the data loader that strings them together.

The data of iteration ``t`` (which images, which augmentation) is a pure function of (seed, t), not of the process
or worker that loads it: a resumed run and a run on another number of processes see the same batches."""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import FCPoseConfig
from ..data.augment import TrainTransform
from ..data.coco import CocoKeypointDataset
from ..data.collate import collate
from ..errors import ConfigError, InputError
from .train_checks import clamp_workers


class IterationSampler(Sampler):
    """Yields ``(epoch, index)`` items for iterations ``start_iter .. max_iter - 1`` of this rank. The global batch of
    iteration t is positions ``t * B .. (t + 1) * B - 1`` of an endless stream of epochs, each a permutation of the
    dataset seeded by (seed, epoch); rank r takes the r-th contiguous slice of ``B / world`` items. A single process
    with batch B and W processes with B / W each see the same images with the same augmentation (seeded by
    (seed, epoch, index) in the dataset)."""

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
    substitute is the same whatever the worker; if no image at all can be read, the error is raised."""

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


def build_train_dataset(cfg: FCPoseConfig, data: str, images: str) -> CocoKeypointDataset:
    """The training set with the config's augmentation and annotation filters; an empty one is a config error."""
    inp, seed = cfg.input, cfg.solver.seed
    dataset = CocoKeypointDataset(data, images, cfg.keypoints, TrainTransform.from_config(cfg), seed=seed,
                                  crowd=inp.crowd, filter_empty=inp.filter_empty,
                                  min_keypoints=inp.min_keypoints_per_image, min_box_size=inp.min_box_size)
    if len(dataset) == 0:
        raise ConfigError(f"{data} has no images to train on")
    return dataset


def build_train_loader(cfg: FCPoseConfig, dataset: CocoKeypointDataset, dev: torch.device, *, rank: int,
                       world: int, start_iter: int, num_workers: int | None, main: bool) -> DataLoader:
    """This rank's batches of iterations ``start_iter .. solver.max_iter - 1`` (:class:`IterationSampler`)."""
    s = cfg.solver
    sampler = IterationSampler(len(dataset), s.ims_per_batch, rank=rank, world=world, seed=s.seed,
                               start_iter=start_iter, max_iter=s.max_iter)
    workers = clamp_workers(s.num_workers if num_workers is None else num_workers, verbose=main)
    # Workers are spawned, not forked: forking a process that holds native thread pools (OpenMP, oneDNN,
    # OpenVINO) is unsafe. They decode and augment ahead of the loop (prefetch), into pinned memory on CUDA.
    return DataLoader(EpochIndexed(dataset), batch_size=sampler.local, sampler=sampler, collate_fn=collate,
                      num_workers=workers, pin_memory=dev.type == "cuda", persistent_workers=False,
                      prefetch_factor=4 if workers > 0 else None,
                      multiprocessing_context="spawn" if workers > 0 else None)
