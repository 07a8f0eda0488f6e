"""Training and held-out batches for one rank: the corpora opened and checked once (``pretrain.corpora``), then
``MLMDataset`` + ``RankSampler`` behind a ``DataLoader`` whose workers make samples while the model trains.

Held-out samples are ``data.eval_prefixes`` when given, else the last ``data.eval_samples`` sample ids of
the training corpus (which training then never sees).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus
from data_tools.tokenizer import Tokenizer, load_tokenizer
from pretrain.config import RunConfig
from pretrain.corpora import open_corpora
from pretrain.dist import DistEnv


def _dataset(cfg: RunConfig, groups: list[list[IndexedCorpus]], weights: list[float] | None, tokenizer: Tokenizer):
    """One ``MLMDataset`` over the shards of every prefix, or a ``BlendedDataset`` of one per prefix when
    weighted."""
    from pretrain.masking import MaskingConfig
    from pretrain.samples import BlendedDataset, MLMDataset

    d = cfg.data
    masking = MaskingConfig(mask_prob=d.mask_prob, whole_word=d.whole_word_mask)

    def make(corpora: list[IndexedCorpus]) -> MLMDataset:
        return MLMDataset(corpora, tokenizer, max_seq_len=d.max_seq_len, style=d.style, nsp=d.nsp, seed=cfg.train.seed,
                          masking=masking, cache_dir=d.cache_dir)

    if weights is None:
        return make([c for group in groups for c in group])
    return BlendedDataset([make(group) for group in groups], weights, seed=cfg.train.seed, cache_dir=d.cache_dir)


class _ById(torch.utils.data.Dataset):
    """Sampler numbers ``epoch × size + id`` → the sample masked for that epoch (dynamic masking), tagged with
    its number so the trainer can record which samples each rank saw."""

    def __init__(self, ds, size: int):
        self.ds, self.size = ds, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, n: int) -> dict[str, np.ndarray]:
        sample = self.ds.get(n % self.size, epoch=n // self.size)
        sample["sample_id"] = np.int64(n)
        return sample


def die_with_parent(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the kernel kills the worker when its trainer dies (kill -9 included).

    Otherwise a worker notices only at its next parent check (~5 s), holding what it inherited from the
    fork meanwhile, the rendezvous port among it: a rerun right after a kill would find MASTER_PORT busy.
    """
    import contextlib
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TrainData:
    """This rank's view of the training and held-out samples.

    Args:
        cfg, dist: The run config and this rank.
        tokenizer: The run's tokenizer.
        train: The opened shards of each ``data.prefixes`` entry; held_out: of each ``data.eval_prefixes``
            entry, or None (``pretrain.corpora.open_corpora`` opened and checked both).
    """

    def __init__(self, cfg: RunConfig, dist: DistEnv, tokenizer: Tokenizer, train: list[list[IndexedCorpus]],
                 held_out: list[list[IndexedCorpus]] | None):
        self.cfg, self.dist = cfg, dist
        d = cfg.data
        self.tokenizer = tokenizer
        self.train = _dataset(cfg, train, d.weights, tokenizer)
        n = len(self.train)
        if held_out:
            self.eval = _dataset(cfg, held_out, None, tokenizer)
            self.eval_ids = list(range(min(len(self.eval), d.eval_samples)))
            self.train_size = n
        else:
            self.eval = self.train
            held = min(d.eval_samples, n // 10)
            self.train_size = n - held
            self.eval_ids = list(range(self.train_size, n))
        if self.train_size < cfg.train.global_batch:
            raise UserError(
                f"data.prefixes: {self.train_size} training samples of {d.max_seq_len} tokens, fewer than one "
                f"global batch (train.global_batch={cfg.train.global_batch})"
            )
        self._loader = None

    def train_batches(self, consumed_samples: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless micro-batches of this rank, starting after ``consumed_samples`` (global count)."""
        from pretrain.sampler import RankSampler
        from pretrain.samples import collate

        c = self.cfg
        sampler = RankSampler(self.train_size, world_size=self.dist.world_size, rank=self.dist.rank,
                              micro_batch=c.train.micro_batch, consumed_samples=consumed_samples,
                              seed=c.train.seed, shuffle=True)
        # Own generator: a DataLoader otherwise draws its worker seed from the global torch RNG, which
        # would make the training RNG stream depend on when iterators are created (and break exact resume).
        self._loader = torch.utils.data.DataLoader(
            _ById(self.train, self.train_size), batch_size=c.train.micro_batch, sampler=sampler,
            collate_fn=collate, num_workers=c.data.num_workers, generator=torch.Generator().manual_seed(0),
            prefetch_factor=4 if c.data.num_workers else None, persistent_workers=False, drop_last=True,
            worker_init_fn=die_with_parent,
        )
        return iter(self._loader)

    def eval_batches(self, max_batches: int) -> list[dict[str, torch.Tensor]] | None:
        """This rank's held-out micro-batches (the same count on every rank, so ZeRO-3 gathers match)."""
        from pretrain.samples import collate

        micro, world = self.cfg.train.micro_batch, self.dist.world_size
        per_rank = min(max_batches, len(self.eval_ids) // (micro * world))
        if per_rank == 0:
            return None
        mine = self.eval_ids[self.dist.rank :: world][: per_rank * micro]
        return [collate([self.eval.get(i, epoch=0) for i in mine[b * micro : (b + 1) * micro]])
                for b in range(per_rank)]

    def close(self) -> None:
        """Stop the loader's workers."""
        self._loader = None


def _open(cfg: RunConfig) -> tuple[Tokenizer, list[list[IndexedCorpus]], list[list[IndexedCorpus]] | None]:
    """The tokenizer and the opened, checked shards of the training and held-out prefixes."""
    if cfg.model.init_from and not Path(cfg.model.init_from).is_dir():
        raise UserError(f"model.init_from: {cfg.model.init_from} is not a directory")
    d = cfg.data
    tokenizer = load_tokenizer(d.tokenizer)
    train = open_corpora(d.prefixes, tokenizer, "data.prefixes")
    held_out = open_corpora(d.eval_prefixes, tokenizer, "data.eval_prefixes") if d.eval_prefixes else None
    return tokenizer, train, held_out


def build_data(cfg: RunConfig, dist: DistEnv) -> TrainData:
    """Load the tokenizer and corpora of ``cfg`` for this rank (UserError naming the key on a problem).

    Runs before the process group exists: a sample index or blend map missing from the cache is built by the
    first rank to lock it while the others wait, then all of them map it (``pretrain.sample_index``).
    """
    return TrainData(cfg, dist, *_open(cfg))


def prepare_data(cfg: RunConfig, workers: int = 1) -> TrainData:
    """Build every sample index and blend map of ``cfg`` into the cache before training (Megatron's
    ``tools/prepare_cache.py``): training then maps them and builds nothing.

    Args:
        cfg: The run config (``data.*`` and ``train.seed``/``global_batch`` matter).
        workers: Corpora indexed at once (threads: the index kernel runs without the GIL).
    Returns:
        The data as training will see it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pretrain.sample_index import load_or_build_index

    d = cfg.data
    tokenizer, train, held_out = _open(cfg)
    if workers > 1:
        corpora = [c for groups in (train, held_out or []) for group in groups for c in group]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda c: load_or_build_index(c, d.style, d.max_seq_len, cfg.train.seed,
                                                        cache_dir=d.cache_dir), corpora))
    return TrainData(cfg, DistEnv(rank=0, world_size=1, local_rank=0), tokenizer, train, held_out)
