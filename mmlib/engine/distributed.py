"""Scale-out helpers: one CPU, one GPU, or many GPUs on many nodes launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, joins the process group (NCCL on CUDA, gloo on CPU) and picks the
device ``cuda:LOCAL_RANK``. Without them it is a single process and nothing is initialised.
Only rank 0 writes files (:attr:`DistInfo.is_main`); metrics are averaged over ranks with
:func:`reduce_mean`. :func:`launch` starts such a job from Python (a notebook, a script) on this
machine without a command line: it spawns the processes, sets the variables ``torchrun`` would
set, and calls a library function in each.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 when alone).
        world_size: number of processes.
        local_rank: rank on this node.
        device: the device this process computes on.
        backend: ``nccl``, ``gloo`` or ``none`` (single process).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is active (more than one process)."""
        return self.backend != "none"


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``).

    ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Raises:
        ValueError: When a CUDA device is asked for and none is available.
    """
    name = str(name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank}")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"config key device={name!r}: CUDA is not available here; use device=cpu or auto"
            )
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    return torch.device(name)


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the ``torchrun`` process group when launched by it, and choose the device.

    Args:
        device: see :func:`pick_device`. Defaults to ``"auto"``.
        timeout_s: collective timeout. Defaults to 1800 s (checkpoint writes on a shared FS).

    Returns:
        The :class:`DistInfo` of this process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, "none")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, backend)


def teardown(info: DistInfo, wait: bool = True) -> None:
    """Leave the process group; ``wait`` for the other ranks first (not after an error)."""
    if info.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when alone)."""
    if info.distributed:
        dist.barrier()


def reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of scalars over ranks (one all-reduce; returned on every rank)."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    dev = info.device if info.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= info.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` when alone)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in ``state_dict`` order (replica checks)."""
    import hashlib

    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(module: torch.nn.Module, info: DistInfo) -> list[str]:
    """Every rank's :func:`weights_digest` (collective).

    Raises:
        RuntimeError: When the ranks' weights differ (a DDP replica diverged).
    """
    digests = gather_objects(weights_digest(module), info)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"DDP replicas diverged: weight digests per rank {[d[:12] for d in digests]}"
        )
    return digests


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, step, chunk, ...), stable across runs."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        mask = 0xFFFFFFFFFFFFFFFF
        h ^= (int(p) + 0x9E3779B97F4A7C15 + ((h << 6) & mask) + (h >> 2)) & mask
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def on_main(info: DistInfo, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result broadcast; an exception there is re-raised on every rank.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: What ``fn`` raised on rank 0 (other ranks
            raise the same type with the same message, instead of waiting forever).
    """
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            error = err
    if info.distributed:
        sent = (
            None if error else result,
            None if error is None else (type(error).__name__, str(error)),
        )
        result, err_info = broadcast_object(sent, info)
        if err_info is not None and error is None:
            kinds = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}
            raise kinds.get(err_info[0], RuntimeError)(err_info[1])
    if error is not None:
        raise error
    return result


def free_port() -> int:
    """A TCP port that is free on this machine now (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    local_rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    nproc: int,
    port: int,
    threads: int,
    result_file: str,
) -> None:
    """One process of :func:`launch`: the variables ``torchrun`` sets, then ``fn(*args)``."""
    os.environ.update(
        {
            "RANK": str(local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(threads),
        }
    )
    # torch is already imported (unpickling fn did it), so the variable alone would be too late
    torch.set_num_threads(threads)
    result = fn(*args)
    if dist.is_available() and dist.is_initialized():
        # fn left the group open: every rank reaches this barrier before any destroys the
        # group (gloo aborts a rank whose peer has gone while it still talks to it)
        dist.barrier()
        dist.destroy_process_group()
    if local_rank == 0:
        with open(result_file, "wb") as fh:
            pickle.dump(result, fh)


def launch(
    fn: Callable[..., Any],
    nproc: int,
    *args: Any,
    threads: int | None = None,
    timeout: float | None = None,
) -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes on this machine as one job; return rank 0's result.

    Each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` as under ``torchrun --standalone``, so ``fn`` joins the process group with
    :func:`setup` (and may leave it with :func:`teardown`; a group ``fn`` leaves open is closed
    here, after a barrier). The processes are spawned, so ``fn`` must be importable (a function
    of a module, not a lambda or a notebook cell's function); its output goes to this
    process's standard streams.

    Args:
        fn: the function each rank calls, e.g. :func:`mmlib.engine.pretrain.pretrain`.
        nproc: number of processes (one per GPU, or CPU processes on gloo).
        *args: the arguments of ``fn`` (picklable).
        threads: CPU threads per process. Defaults to None (``OMP_NUM_THREADS`` when set,
            else 1 as under ``torchrun``: the same job then computes the same numbers).
        timeout: seconds before the job is stopped. Defaults to None (no limit).

    Returns:
        What ``fn`` returned on rank 0.

    Raises:
        ValueError: When ``nproc`` is below 1.
        RuntimeError: When a rank fails (its traceback is in the message).
        TimeoutError: When the job runs longer than ``timeout``.
    """
    import torch.multiprocessing as mp

    if int(nproc) < 1:
        raise ValueError(f"launch: nproc must be at least 1, got {nproc}")
    name = getattr(fn, "__name__", repr(fn))
    n_threads = int(threads if threads is not None else os.environ.get("OMP_NUM_THREADS", "1"))
    with tempfile.TemporaryDirectory(prefix="mmlib-launch-") as tmp:
        result_file = str(Path(tmp) / "result.pkl")
        args_ = (fn, tuple(args), int(nproc), free_port(), n_threads, result_file)
        ctx = mp.start_processes(
            _worker, args=args_, nprocs=int(nproc), join=False, start_method="spawn"
        )
        start = time.monotonic()
        try:
            while not ctx.join(timeout=1.0):
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(
                        f"launch: {nproc} processes ran longer than {timeout} s; "
                        "raise the timeout or make the job smaller"
                    )
        except mp.ProcessRaisedException as err:
            raise RuntimeError(f"launch: a rank of {name} failed:\n{err}") from None
        except mp.ProcessExitedException as err:
            raise RuntimeError(f"launch: a rank of {name} died: {err}") from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        with open(result_file, "rb") as fh:
            return pickle.load(fh)
