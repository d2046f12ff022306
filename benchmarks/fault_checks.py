"""What the fault checks cost: the trainer's finiteness guard and streamed shard checksums.

    python benchmarks/fault_checks.py            # about a minute on 2 CPU cores
    python benchmarks/fault_checks.py --quick    # smoke run

Training: step time of ``Trainer.train_step`` with the guard (the loss and the sum of
each gradient checked for NaN/inf, one host sync per step) and with it switched off, for
a small and a mid-size TopK SAE: the best median of three alternating blocks each.
Streaming: seconds per pass of ``ShardedBatches`` over the same shards with and without
``sha256`` (each shard hashed as it is read), from the page cache (the worst case: no
disk time to hide the hash behind), against one training step at that batch size.
Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import torch

from saelib.data import ShardedBatches, write_shards
from saelib.files import sha256_file
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer


def step_times(d_in: int, d_sae: int, batch: int, steps: int) -> tuple[float, float, float]:
    """Seconds per step (guard on, guard off: the best of three blocks' medians each) and
    of the guard alone (the best of five timings: steady where the steps are noisy)."""
    x = torch.randn(batch, d_in)
    cfg = TrainConfig(n_steps=10 * steps, progress=False, log_every=10**6)
    trainer = Trainer(make_sae(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=32)), cfg)
    guard = trainer._finite
    for _ in range(3):
        trainer.train_step(x)  # warm-up
    best = {True: float("inf"), False: float("inf")}
    for _ in range(3):
        for on in (True, False):
            trainer._finite = guard if on else (lambda total: True)
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                trainer.train_step(x)
                times.append(time.perf_counter() - start)
            best[on] = min(best[on], statistics.median(times))
    total, _, _ = trainer.sae.training_loss(x, 0.0)
    total.backward()
    alone = min(timeit.repeat(lambda: guard(total), number=20, repeat=5)) / 20
    return best[True], best[False], alone


def stream_times(rows: int, d: int, shards: int, batch: int, repeats: int) -> tuple[float, float]:
    """Seconds per pass over ``shards`` shards (with sha256, without)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(torch.randn(rows * shards, d), Path(tmp), rows_per_shard=rows)
        sums = [sha256_file(p) for p in paths]
        plain = ShardedBatches(paths, batch)
        checked = ShardedBatches(paths, batch, sha256=sums)
        out: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeats):
            for on, data in ((True, checked), (False, plain)):
                stream = iter(data)
                start = time.perf_counter()
                for _ in range(data.per_pass):
                    next(stream)
                out[on].append(time.perf_counter() - start)
    return min(out[True]), min(out[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    steps = 10 if args.quick else 60
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| training step | guard on (ms) | guard off (ms) | overhead | guard alone (ms) |")
    print("|---|---|---|---|---|")
    for d_in, d_sae, batch in ((64, 512, 1024), (576, 4608, 1024)):
        on, off, alone = step_times(d_in, d_sae, batch, steps // (4 if d_in > 64 else 1))
        print(
            f"| d_in {d_in}, d_sae {d_sae}, batch {batch} | {on * 1e3:.2f} | "
            f"{off * 1e3:.2f} | {100 * (on / off - 1):+.1f}% | {alone * 1e3:.3f} "
            f"({100 * alone / off:.1f}% of a step) |"
        )
    rows, d = (4096, 576) if args.quick else (32_768, 576)
    on, off = stream_times(rows, d, shards=4, batch=4096, repeats=2 if args.quick else 5)
    mib = rows * d * 4 / 2**20
    print(
        f"\n| streaming 4 shards of {rows} x {d} float32 ({mib:.0f} MiB each), batch 4096 "
        f"| sha256 on (s/pass) | off (s/pass) | overhead |"
    )
    print("|---|---|---|---|")
    print(
        f"| page cache | {on:.3f} | {off:.3f} | {on - off:+.3f} s ({100 * (on / off - 1):+.0f}%) |"
    )
    step, _, _ = step_times(d, 8 * d, 4096, 3)
    per_pass = 4 * rows // 4096 * step
    print(
        f"\nTraining one pass of those batches (d_sae {8 * d}, TopK) takes about {per_pass:.1f} s: "
        f"the checksum adds {100 * (on - off) / per_pass:.1f}% to it."
    )


if __name__ == "__main__":
    main()
