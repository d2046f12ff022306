"""Training past one process on PyTorch's own engine: torch.distributed, launched by torchrun.

    torchrun --nproc_per_node 2 my_script.py     # each process:
        init_from_env("cpu")                     # gloo on CPU, NCCL on CUDA
        trainer = DataParallelTrainer(sae, cfg)  # the Trainer, data parallel
        trainer.fit(TensorBatches(x, batch_size=4096))   # every rank: the same global batches

Data parallel: every rank draws the same global batch from the same seeded source and
trains on its slice (rank r takes rows ``[r b/N, (r+1) b/N)``); the gradients (and the
loss) are averaged across ranks with one all-reduce, so every rank takes the same Adam
step as one process on the whole batch, up to the order of float additions. What a
batch decides together is reduced too: the latents that fired (for dead-latent counts),
BatchTopK's selection (the ``k * batch`` largest pre-activations of the *global* batch,
not of each slice) and its running threshold. Rank 0 alone writes checkpoints; every rank
resumes from them. Ranks read the whole global batch (simple, deterministic; the reading
is repeated N times).

``run_local(fn, world_size)`` starts ``world_size`` processes on this machine (the tests
and benchmarks use it: gloo, a file store, a timeout); a failing rank stops them all with
an error naming it. Only gloo is exercised here; NCCL is chosen for CUDA devices and is
untested in this repository.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from saelib.validation import check_int

__all__ = [
    "backend_for",
    "init_from_env",
    "require_group",
    "rank",
    "world_size",
    "is_main",
    "all_reduce_mean_",
    "local_rows",
    "global_batch_topk_entries",
    "run_local",
]


def backend_for(device: str | torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise (CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: str = "cpu", timeout_s: float = 600.0) -> str:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``, ...).

    Returns the device this rank trains on: ``device`` itself, or ``cuda:LOCAL_RANK`` for
    a CUDA device. A no-op when the group is already initialised.
    """
    if torch.device(device).type == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"init_from_env needs the variables torchrun sets ({', '.join(missing)} "
                f"missing); launch with torchrun --nproc_per_node N ..."
            )
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend_for(device), timeout=timeout)
    return device


def require_group(who: str) -> None:
    """Raise a RuntimeError naming ``who`` when no process group is initialised."""
    if not dist.is_initialized():
        raise RuntimeError(
            f"{who} needs a torch.distributed process group: launch with torchrun and call "
            f"saelib.distributed.init_from_env(device) first"
        )


def rank(group=None) -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank(group) if dist.is_initialized() else 0


def world_size(group=None) -> int:
    """Processes in the group (1 when not distributed)."""
    return dist.get_world_size(group) if dist.is_initialized() else 1


def is_main(group=None) -> bool:
    return rank(group) == 0


def all_reduce_mean_(tensors: Sequence[Tensor], group=None) -> None:
    """Replace each tensor by its mean over the ranks, in one all-reduce of one buffer."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, dist.ReduceOp.SUM, group=group)
    flat.div_(world_size(group))
    start = 0
    for t in tensors:
        t.copy_(flat[start : start + t.numel()].view_as(t))
        start += t.numel()


def local_rows(x: Tensor, group=None) -> Tensor:
    """This rank's equal slice of the global batch ``x [batch, ...]`` (rows in rank order)."""
    n, r = world_size(group), rank(group)
    if x.shape[0] % n:
        raise ValueError(
            f"batch_size={x.shape[0]} must be a multiple of the world size {n}: every rank "
            f"takes an equal slice of the global batch"
        )
    b = x.shape[0] // n
    return x[r * b : (r + 1) * b]


@torch.no_grad()
def global_batch_topk_entries(pre: Tensor, k: int, group=None) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of this rank's entries among the ``k * B`` largest of the global batch.

    ``pre [b, d_sae]`` is this rank's slice of the global batch ``[B = b * N, d_sae]`` (all
    slices equal). Equals ``sparse.batch_topk_entries`` on the concatenated batch, split
    by rank. Each rank sends its ``min(k B, b d_sae)`` largest values (the global ones are
    among them); the ``k B``-th largest of those is the threshold ``t``; entries above it
    are kept, and the ties at ``t`` needed to make ``k B`` are taken in global order (rank,
    then row, then latent): deterministic, whereas one process's ``topk`` leaves the
    choice among ties unspecified. Rows and cols are sorted by row, then latent.
    """
    n_ranks = world_size(group)
    flat = pre.reshape(-1)
    n_keep = k * pre.shape[0] * n_ranks
    local = flat.topk(min(n_keep, flat.numel()), sorted=False).values
    gathered = [torch.empty_like(local) for _ in range(n_ranks)]
    dist.all_gather(gathered, local, group=group)
    t = torch.cat(gathered).topk(n_keep, sorted=False).values.min()
    above, ties = flat > t, flat == t
    counts = torch.stack([above.sum(), ties.sum()]).to(torch.long)
    all_counts = [torch.empty_like(counts) for _ in range(n_ranks)]
    dist.all_gather(all_counts, counts, group=group)
    all_counts = torch.stack(all_counts)  # [n_ranks, 2]
    need = n_keep - int(all_counts[:, 0].sum())
    before = int(all_counts[: rank(group), 1].sum())
    take = min(int(counts[1]), max(0, need - before))
    tie_idx = ties.nonzero().squeeze(1)[:take]
    idx = torch.cat([above.nonzero().squeeze(1), tie_idx]).sort().values
    return idx.div(pre.shape[1], rounding_mode="floor"), idx.remainder(pre.shape[1])


# -- several processes on this machine (tests, benchmarks) -------------------------------
def _numpy(value):
    """Tensors (in dicts, lists, tuples) as numpy arrays, to cross the process boundary."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy(v) for v in value)
    return value


def _worker(index, fn, args, world, store, timeout_s, threads, results):
    torch.set_num_threads(threads)
    os.environ.update(RANK=str(index), WORLD_SIZE=str(world), LOCAL_RANK=str(index))
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=index,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        results.put(("result", index, time.time(), _numpy(fn(index, *args))))
    except BaseException:
        results.put(("error", index, time.time(), traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_local(
    fn: Callable,
    world_size: int = 2,
    args: tuple = (),
    *,
    timeout_s: float = 120.0,
    threads: int = 1,
) -> list:
    """``[fn(rank, *args) for rank in range(world_size)]``, each rank in its own process.

    The processes form a gloo group (through a file store in a temporary folder) before
    ``fn`` runs, with ``threads`` torch threads each. Tensors in the results come back as
    numpy arrays. When a rank fails, the others are stopped and a RuntimeError names the
    rank that failed first (one killed by a signal, else the earliest to raise, whose
    traceback it quotes; its peers then fail in their collectives). A run still going
    after ``timeout_s`` seconds is killed, naming the ranks left. ``fn`` must be
    picklable (a module-level function).
    """
    check_int("world_size", world_size, low=1)
    check_int("threads", threads, low=1)
    ctx = mp.get_context("spawn")  # fork is unsafe with torch's threads
    results = ctx.SimpleQueue()
    out: dict[int, object] = {}
    errors: dict[int, tuple[float, str]] = {}

    def drain():
        while not results.empty():
            kind, index, when, value = results.get()
            if kind == "result":
                out[index] = value
            else:
                errors[index] = (when, value)

    with tempfile.TemporaryDirectory(prefix="saelib-dist-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            ctx.Process(
                target=_worker,
                args=(i, fn, args, world_size, store, timeout_s, threads, results),
            )
            for i in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline, stop_at, stopped = time.monotonic() + timeout_s, None, set()
        try:
            while True:
                drain()
                codes = [p.exitcode for p in procs]
                if all(c is not None for c in codes):
                    break
                now = time.monotonic()
                if stop_at is None and any(c not in (None, 0) for c in codes):
                    stop_at = now + _GRACE_S  # let the peers report their errors
                if stop_at is not None and now > stop_at:
                    break
                if now > deadline:
                    alive = [i for i, c in enumerate(codes) if c is None]
                    raise TimeoutError(
                        f"run_local: ranks {alive} still running after timeout_s={timeout_s}; "
                        f"killed"
                    )
                time.sleep(0.02)
        finally:
            for i, p in enumerate(procs):
                if p.is_alive():
                    p.kill()
                    stopped.add(i)
                p.join()
        drain()
    codes = [p.exitcode for p in procs]
    signalled = [i for i, c in enumerate(codes) if c < 0 and i not in set(errors) | stopped]
    if signalled:
        i = signalled[0]
        raise RuntimeError(f"rank {i} died (killed by signal {-codes[i]}); the run stopped")
    if errors:
        i = min(errors, key=lambda r: errors[r][0])
        others = sorted(set(errors) - {i})
        then = f" (then ranks {others} failed too)" if others else ""
        raise RuntimeError(f"rank {i} failed{then}:\n{errors[i][1]}")
    missing = sorted(set(range(world_size)) - set(out))
    if missing:
        raise RuntimeError(f"run_local: ranks {missing} returned no result")
    return [out[i] for i in range(world_size)]


_GRACE_S = 10.0
"""After a rank fails, how long the others get to report their own errors."""
