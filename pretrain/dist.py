"""Distributed setup without DeepSpeed: rank discovery for every launcher, the rendezvous port, teardown.

The launchers differ only in how a process learns its rank:

- ``deepspeed`` and ``torchrun`` export ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``
  (the deepspeed launcher also passes ``--local_rank``);
- ``mpirun`` (Open MPI) exports ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}``, MPICH/Intel MPI ``PMI_RANK``/
  ``PMI_SIZE``; the master address then defaults to 127.0.0.1 (pass ``-x MASTER_ADDR=…`` across nodes);
- a plain ``python -m pretrain train`` is rank 0 of 1.

Joining the process group is ``pretrain.engine.init_distributed``: it goes through ``deepspeed.init_distributed``
so that DeepSpeed's communication layer knows the group, and DeepSpeed is imported only there.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass

import torch

from data_tools.errors import UserError


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
