"""DeepSpeed setup: joining the process group, config validation, optimizer/schedule, the engine (pre-training
and fine-tuning), the ZeRO-3 parameter gather.

This is the only module (with ``checkpoint.py`` and ``elastic.py``) that imports DeepSpeed; rank discovery,
the rendezvous port and teardown, which need no DeepSpeed, are in ``pretrain.dist``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from data_tools.errors import UserError
from pretrain.config import RunConfig, check_sections_are_objects
from pretrain.dist import DistEnv, wait_for_port


def init_distributed(dist: DistEnv) -> None:
    """Join the process group (gloo on CPU, nccl on CUDA); a no-op when already joined."""
    import deepspeed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
    if dist.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":  # rank 0 hosts the store
        wait_for_port(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    # auto_mpi_discovery off: discover_dist_env already mapped the MPI variables, and DeepSpeed's own
    # discovery would re-initialise MPI and guess the master address from the hostname.
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    _unlink_shm_buffer(dist)


SHM_DIR = Path("/dev/shm")


def shm_buffer_name(rank: int) -> str:
    """The name DeepSpeed gives this rank's shared-memory allreduce workspace (deepspeed 0.19.8,
    ``csrc/cpu/comm/shm.cpp`` ``shm_initialize``: ``deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def _unlink_shm_buffer(dist: DistEnv) -> None:
    """Remove this rank's DeepSpeed shared-memory workspace name once every rank has mapped it.

    On CPU, when the launcher sets ``LOCAL_SIZE`` equal to the world size (``deepspeed`` on one node does),
    DeepSpeed's communication backend creates a 66 MB ``/dev/shm`` segment per rank and never unlinks it
    (``shm.cpp`` has a ``shared_close`` that nothing calls). /dev/shm is memory: every run left 66 MB per rank
    behind until reboot, and a machine that ran a few hundred jobs had 19 GB of RAM gone (seen here: Ray tasks
    and compilers were OOM-killed). Every rank maps all peers' segments inside ``init_distributed``, so after a
    barrier the names are no longer needed; the mappings stay valid until the processes exit, and the memory is
    freed then, however they exit.
    """
    if not SHM_DIR.is_dir():
        return
    if dist.world_size > 1:
        torch.distributed.barrier()  # every peer has opened this rank's segment
    with contextlib.suppress(FileNotFoundError):
        (SHM_DIR / shm_buffer_name(dist.rank)).unlink()


# Top-level DeepSpeed keys a config in this project may use; anything else is most likely a typo that
# DeepSpeed itself would silently ignore.
KNOWN_DS_KEYS = frozenset(
    {
        "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
        "gradient_clipping", "steps_per_print", "wall_clock_breakdown", "zero_optimization", "fp16", "bf16",
        "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "communication_data_type",
        "prescale_gradients", "gradient_predivide_factor", "activation_checkpointing", "flops_profiler",
        "comms_logger", "checkpoint", "data_types", "torch_autocast", "dump_state", "memory_breakdown",
        "seq_parallel_communication_data_type", "sparse_gradients", "aio", "disable_allgather",
    }
)


def validate_deepspeed(ds: dict[str, Any], path: str) -> None:
    """Check a DeepSpeed config dict with DeepSpeed's own pydantic models before the engine sees it.

    Args:
        ds: The DeepSpeed config (as from ``config.deepspeed_dict``).
        path: Its file, for messages.
    Raises:
        UserError naming the file and key on an unknown key, a bad value, or fp16 without CUDA.
    """
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    for key in ds:
        if key not in KNOWN_DS_KEYS:
            raise UserError(f"{path}: unknown DeepSpeed key {key!r} (expected one of {sorted(KNOWN_DS_KEYS)})")
    check_sections_are_objects(ds, path)
    for key, model in (("zero_optimization", DeepSpeedZeroConfig), ("fp16", DeepSpeedFP16Config),
                       ("bf16", DeepSpeedBF16Config)):
        try:
            model(**ds.get(key, {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{path}: {key}.{loc}: {err['msg']} (got {err.get('input')!r})") from None
    if ds.get("fp16", {}).get("enabled") and not torch.cuda.is_available():
        raise UserError(f"{path}: fp16.enabled needs a CUDA device (DeepSpeed refuses fp16 on CPU); use bf16 or fp32")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``weight_decay`` on matrices, none on biases and LayerNorm weights.

    BERT's recipe (also run_glue.py's): every trainable parameter with fewer than 2 dimensions is not decayed.
    Frozen parameters (``requires_grad=False``) are left out. Used by pre-training and fine-tuning.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The client optimizer named by ``optim.name`` (DeepSpeed's fused/CPU kernels where asked for)."""
    o = cfg.optim
    groups = param_groups(model, o.weight_decay)
    kw = dict(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, **kw)
    if o.name == "cpu_adam":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kw)
    if not torch.cuda.is_available():
        raise UserError(f"optim.name: {o.name!r} is a fused CUDA kernel; on CPU use 'adamw' or 'cpu_adam'")
    if o.name == "fused_adam":
        from deepspeed.ops.adam import FusedAdam

        return FusedAdam(groups, adam_w_mode=True, **kw)
    from deepspeed.ops.lamb import FusedLamb

    return FusedLamb(groups, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def lr_lambda(cfg: RunConfig):
    """Multiplier of ``optim.lr`` at a step: linear warmup, then linear decay to ``optim.min_lr``."""
    total, warmup = cfg.total_steps(), cfg.warmup_steps()
    floor = cfg.optim.min_lr / cfg.optim.lr

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(floor, 1.0 - (1.0 - floor) * min(1.0, progress))

    return fn


def build_engine(cfg: RunConfig, model: torch.nn.Module, ds: dict[str, Any], extra: dict[str, Any] | None = None):
    """Wrap ``model`` in a DeepSpeed engine configured by the run config and its DeepSpeed JSON.

    Args:
        cfg: The run config.
        model: The ``PretrainModel``.
        ds: The run's DeepSpeed config, read and checked once (``config.deepspeed_dict``, then
            ``validate_deepspeed``); not modified. The process group must be initialised.
        extra: Sections merged into the DeepSpeed config (``pretrain.elastic.deepspeed_overrides``).
    Returns:
        ``(engine, ds_config_dict)``: the dict DeepSpeed was given (``ds`` with ``extra`` merged in).
    """
    import deepspeed

    ds = dict(ds)
    for key, section in (extra or {}).items():
        ds[key] = {**ds.get(key, {}), **section}
    ds.setdefault("steps_per_print", 10**9)  # we log ourselves; keep DeepSpeed's per-step prints off
    optimizer = build_optimizer(cfg, model)
    fn = lr_lambda(cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, fn),
        config=ds,
    )
    return engine, ds


def finetune_deepspeed_dict(config_path: Path, batch_size: int, clip_grad: float,
                            world_size: int) -> dict[str, Any]:
    """A fine-tuning run's DeepSpeed config, read and checked as pre-training's (``checked_deepspeed_json``).

    The fine-tuning loop owns the optimizer and schedule (``--lr``/``--warmup-ratio``/``--weight-decay``),
    batching (one micro-batch per rank per step) and clipping; those keys must be absent, ``"auto"`` or equal.

    Args:
        config_path: The ``--deepspeed`` JSON.
        batch_size: ``--batch-size`` (per rank).
        clip_grad: ``--clip-grad``.
        world_size: Data-parallel ranks.
    Returns:
        The checked dict (duplicate keys, unknown keys and bad values refused), a UserError naming the file
        otherwise.
    """
    from pretrain.config import checked_deepspeed_json

    ds_cfg = checked_deepspeed_json(config_path, {
        "train_micro_batch_size_per_gpu": (batch_size, "--batch-size"),
        "gradient_accumulation_steps": (1, "fine-tuning, which does not accumulate"),
        "train_batch_size": (batch_size * world_size, "--batch-size × world size"),
        "gradient_clipping": (clip_grad, "--clip-grad"),
    }, {"optimizer": "--lr/--weight-decay", "scheduler": "--lr/--warmup-ratio"})
    validate_deepspeed(ds_cfg, str(config_path))
    return ds_cfg


def initialize_finetune(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, config_path: Path,
                        batch_size: int, clip_grad: float):
    """Hand a fine-tuning model, its optimizer and schedule to ``deepspeed.initialize`` (ZeRO 0-3).

    Args:
        model, optimizer, scheduler: What the fine-tuning loop built.
        config_path: The ``--deepspeed`` JSON (checked by ``finetune_deepspeed_dict``).
        batch_size: ``--batch-size`` (per rank).
        clip_grad: ``--clip-grad``.
    Returns:
        ``(engine, optimizer, scheduler)`` as DeepSpeed wrapped them. The process group must be initialised.
    """
    import deepspeed

    ds_cfg = finetune_deepspeed_dict(config_path, batch_size, clip_grad, torch.distributed.get_world_size())
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=ds_cfg)
    return engine, optimizer, scheduler


@contextlib.contextmanager
def gathered_parameters(engine, module: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``module``'s full weights are present on every rank (read-only).

    Under ZeRO-3 the parameters are partitioned: every rank must enter (the gather is collective). Without
    an engine (``None``) or below stage 3 the weights are already whole and this does nothing.
    """
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def loss_scale(engine) -> float:
    """The engine's current dynamic (or static) fp16 loss scale; 1.0 when not training in fp16."""
    if not engine.fp16_enabled():
        return 1.0
    opt = engine.optimizer
    scale = opt.loss_scale_config.cur_scale if hasattr(opt, "loss_scale_config") else getattr(opt, "cur_scale", 1.0)
    return float(scale)


def sync_ascent_scale(engine, model: torch.nn.Module) -> None:
    """Under DeepSpeed fp16, seed ALUM's ascent scaler from the engine's loss scale, once.

    After the seed the scaler is the only owner of its scale: its own backoff (on an ascent overflow) and
    growth survive later DeepSpeed steps instead of being overwritten every micro-step.
    """
    scaler = getattr(model, "ascent_scaler", None)
    if scaler is not None and engine.fp16_enabled():
        scaler.seed(loss_scale(engine))


# DeepSpeed's C++ ops that CPU runs JIT-compile on first use: the shared-memory collectives (every
# deepspeed.initialize on the CPU accelerator) and Adam for ZeRO-Offload (optim.name "cpu_adam").
CPU_OPS = ("ShareMemCommBuilder", "CPUAdamBuilder")


def build_ops(names: tuple[str, ...] = CPU_OPS) -> list[tuple[str, float]]:
    """Compile DeepSpeed's JIT ops now, into ``TORCH_EXTENSIONS_DIR`` (torch's cache), so that the first
    training run does not stall for minutes with every rank waiting on the build lock.

    Returns:
        ``(op name, seconds)`` per op; an op already in the cache loads in well under a second.
    """
    import time

    from deepspeed.accelerator import get_accelerator

    done = []
    for name in names:
        builder = get_accelerator().create_op_builder(name)
        if builder is None:
            raise UserError(f"build-ops: DeepSpeed's {get_accelerator().device_name()} accelerator has no {name}")
        t0 = time.perf_counter()
        builder.load()
        done.append((builder.NAME, time.perf_counter() - t0))
    return done
