"""DeepSpeed setup: rank discovery for every launcher, config validation, optimizer/schedule, the engine.

This is the only module (with ``checkpoint.py``) that imports DeepSpeed. The launchers differ only in how
a process learns its rank:

- ``deepspeed`` and ``torchrun`` export ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``
  (the deepspeed launcher also passes ``--local_rank``);
- ``mpirun`` (Open MPI) exports ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}``, MPICH/Intel MPI ``PMI_RANK``/
  ``PMI_SIZE``; the master address then defaults to 127.0.0.1 (pass ``-x MASTER_ADDR=…`` across nodes);
- a plain ``python -m pretrain train`` is rank 0 of 1.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from data_tools.errors import UserError
from pretrain.config import RunConfig, deepspeed_dict


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, world size, rank on its node."""

    rank: int
    world_size: int
    local_rank: int


def prefer_interpreter_tools() -> None:
    """Put this interpreter's ``bin`` first on PATH when it holds a ``ninja``.

    DeepSpeed JIT-compiles its ops with the first ``ninja`` on PATH. A venv's ninja and a system one of
    another version hash build commands differently, so processes started with and without the venv
    activated rebuild the shared ops every time (minutes each); pinning the venv's keeps one build.
    """
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if os.path.exists(os.path.join(bin_dir, "ninja")) and path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])


def discover_dist_env(local_rank_arg: int | None = None) -> DistEnv:
    """Read rank/world from the launcher's environment (torchrun, deepspeed, mpirun) and export the
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` variables torch.distributed's ``env://`` needs.

    Args:
        local_rank_arg: The ``--local_rank`` flag, if a launcher passed one.
    Returns:
        The process's ``DistEnv``.
    """
    prefer_interpreter_tools()
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0))
    elif "OMPI_COMM_WORLD_RANK" in env:
        rank, world = int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"])
        local = int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", 0))
    elif "PMI_RANK" in env:
        rank, world = int(env["PMI_RANK"]), int(env["PMI_SIZE"])
        local = int(env.get("MPI_LOCALRANKID", env.get("PMI_LOCAL_RANK", 0)))
    else:
        rank, world, local = 0, 1, local_rank_arg or 0
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    return DistEnv(rank, world, local)


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


def wait_for_port(addr: str, port: int, timeout: float = 30.0) -> None:
    """Wait until rank 0 can listen on ``addr:port`` (the rendezvous), or UserError naming the port.

    A run killed a moment ago may still hold it in an exiting process; a few seconds fix that. Anything
    else on the port (another job) gets one line instead of DeepSpeed's EADDRINUSE traceback.
    """
    import socket

    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"MASTER_ADDR {addr}: cannot resolve it ({exc})") from None
    family, _, _, _, sockaddr = infos[0]
    deadline, said = time.monotonic() + timeout, False
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
                return
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # not an address of this machine: not ours to check
                    return
                if exc.errno != errno.EADDRINUSE:
                    raise
        if time.monotonic() > deadline:
            raise UserError(f"MASTER_PORT {port} on {addr} is in use (another job, or a killed run's processes); "
                            f"stop it or choose another port, e.g. MASTER_PORT={port + 1} (deepspeed --master_port)")
        if not said:
            print(f"waiting for port {addr}:{port} (in use, e.g. by a run killed a moment ago)", file=sys.stderr,
                  flush=True)
            said = True
        time.sleep(0.5)


def shutdown_distributed() -> None:
    """Barrier then destroy the process group, so that no rank exits while others still talk to it.

    Through ``deepspeed.comm`` when DeepSpeed initialised it: DeepSpeed caches its groups in module globals
    (``deepspeed.utils.groups``) and only its own ``destroy_process_group`` releases them. Destroying with
    plain torch leaves them pointing at dead groups, and the next ``deepspeed.initialize`` in the same
    process (a notebook, a sweep, the test suite) fails with "Group ... is not registered".
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.barrier()
    ds_comm = sys.modules.get("deepspeed.comm")
    if ds_comm is not None and ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    else:
        torch.distributed.destroy_process_group()


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
    for key, model in (("zero_optimization", DeepSpeedZeroConfig), ("fp16", DeepSpeedFP16Config),
                       ("bf16", DeepSpeedBF16Config)):
        section = ds.get(key, {})
        if not isinstance(section, dict):
            raise UserError(f"{path}: {key}: expected an object, got {section!r}")
        try:
            model(**section)
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


def build_engine(cfg: RunConfig, model: torch.nn.Module, dist: DistEnv, extra: dict[str, Any] | None = None):
    """Wrap ``model`` in a DeepSpeed engine configured by the run config and its DeepSpeed JSON.

    Args:
        cfg: The run config.
        model: The ``PretrainModel``.
        dist: From ``discover_dist_env``; the process group must be initialised.
        extra: Sections merged into the DeepSpeed config (``pretrain.elastic.deepspeed_overrides``).
    Returns:
        ``(engine, ds_config_dict)``.
    """
    import deepspeed

    ds = deepspeed_dict(cfg, dist.world_size)
    for key, section in (extra or {}).items():
        ds[key] = {**ds.get(key, {}), **section}
    validate_deepspeed(ds, cfg.train.deepspeed_config)
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


def is_zero3(engine) -> bool:
    """Whether parameters are partitioned (ZeRO stage 3)."""
    return engine.zero_optimization_stage() == 3
