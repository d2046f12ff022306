"""How to train many small SAEs (a chapter's seeds) on 2 cores: one after another, stacked,
or in worker processes.

Chapter 01 trains dozens of SAEs with d_in 48 and d_sae 128 on batches of 256, where a step
costs a few milliseconds of which the products are a small part. Three ways to run ``S``
seeds, timed per seed-step on the same machine:

- ``sequential``: the library's Trainer, one seed after another, at 1 and at 2 threads;
- ``stacked``: ``S`` ReLU SAEs as one model with stacked weights ``[S, d_in, d_sae]`` and
  batched products (``torch.baddbmm``), one Adam over the stacked parameters (Adam is
  elementwise, so the seeds stay independent); a bare loop with none of the Trainer's
  bookkeeping, i.e. a lower bound on what stacking costs;
- ``saelib.stacked``: the library's ``train_stacked`` (each member matches the Trainer up to
  rounding: its own batch stream, schedules, decoder projection, logs);
- ``processes``: the Trainer in ``saelib.parallel.map_seeds`` workers of one thread each.

    .venv/bin/python benchmarks/seed_stacking.py            # writes results/seed_stacking.md

What the chapters use follows from the table (``saelib.parallel``).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch

from saelib.data import TensorBatches
from saelib.parallel import map_seeds
from saelib.saes import SAEConfig, make_sae
from saelib.stacked import train_stacked
from saelib.training import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results"


def trainer_seed(d: int, n: int, batch: int, steps: int, seed: int) -> float:
    """Seconds for one seed: a ReLU SAE trained by the library's Trainer."""
    x = torch.randn(32768, d, generator=torch.Generator().manual_seed(seed))
    sae = make_sae(SAEConfig(d_in=d, d_sae=n, architecture="relu", seed=seed))
    cfg = TrainConfig(n_steps=steps, lr=2e-3, sparsity_coeff=0.5, progress=False)
    began = time.perf_counter()
    Trainer(sae, cfg).fit(TensorBatches(x, batch, seed=seed))
    return time.perf_counter() - began


def stacked(s: int, d: int, n: int, batch: int, steps: int) -> float:
    """Seconds for ``s`` stacked ReLU SAEs trained together (a bare loop)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32768, d, generator=g)
    W_dec = torch.nn.functional.normalize(torch.randn(s, n, d, generator=g), dim=-1)
    params = {
        "W_enc": W_dec.transpose(1, 2).clone().requires_grad_(),
        "b_enc": torch.zeros(s, 1, n, requires_grad=True),
        "W_dec": W_dec.requires_grad_(),
        "b_dec": torch.zeros(s, 1, d, requires_grad=True),
    }
    opt = torch.optim.Adam(params.values(), lr=2e-3, fused=True)
    began = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (s, batch), generator=g)
        xb = x[idx]  # [s, batch, d]
        f = torch.relu(torch.baddbmm(params["b_enc"], xb - params["b_dec"], params["W_enc"]))
        x_hat = torch.baddbmm(params["b_dec"], f, params["W_dec"])
        norms = params["W_dec"].norm(dim=-1)  # [s, n]
        loss = ((x_hat - xb) ** 2).sum(-1).mean() + 0.5 * (f * norms[:, None]).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        (loss * s).backward()
        opt.step()
        with torch.no_grad():
            params["W_dec"].div_(params["W_dec"].norm(dim=-1, keepdim=True))
    return time.perf_counter() - began


def library_stacked(s: int, d: int, n: int, batch: int, steps: int) -> float:
    """Seconds for ``s`` ReLU SAEs trained together by ``saelib.stacked.train_stacked``."""
    x = torch.randn(32768, d, generator=torch.Generator().manual_seed(0))
    saes = [make_sae(SAEConfig(d_in=d, d_sae=n, architecture="relu", seed=i)) for i in range(s)]
    cfg = TrainConfig(n_steps=steps, lr=2e-3, sparsity_coeff=0.5, progress=False)
    batches = [TensorBatches(x, batch, seed=i) for i in range(s)]
    began = time.perf_counter()
    train_stacked(saes, cfg, batches)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--d", type=int, default=48)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS / "seed_stacking.md")
    args = parser.parse_args()
    s, shape = args.seeds, (args.d, args.n, args.batch, args.steps)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        trainer_seed(*shape, seed=99)  # warm-up
        seconds = sum(trainer_seed(*shape, seed=i) for i in range(s))
        rows.append((f"sequential, Trainer, {threads} thread(s)", seconds))
        stacked(s, *shape)  # warm-up
        rows.append((f"stacked {s} seeds, bare loop, {threads} thread(s)", stacked(s, *shape)))
        rows.append((f"stacked {s} seeds, saelib.stacked, {threads} thread(s)",
                     library_stacked(s, *shape)))  # fmt: skip
    began = time.perf_counter()
    map_seeds(partial(trainer_seed, *shape), range(s), workers=2, progress=False)
    rows.append(("processes, Trainer, 2 workers x 1 thread (incl. start-up)",
                 time.perf_counter() - began))  # fmt: skip
    per_step = 1e3 / (s * args.steps)
    lines = [
        f"{s} ReLU SAEs (d_in {args.d}, d_sae {args.n}, batch {args.batch}, {args.steps} steps "
        f"each) on {torch.get_num_threads()} available threads; torch {torch.__version__}.",
        "",
        "| how | wall seconds | ms per seed-step |",
        "|---|---|---|",
        *(f"| {name} | {sec:.1f} | {sec * per_step:.2f} |" for name, sec in rows),
        "",
        "Command: `.venv/bin/python benchmarks/seed_stacking.py`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
