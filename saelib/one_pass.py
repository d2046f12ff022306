"""Several SAEs trained on one pass over the data: a sweep sharing one stream of batches.

    trainers = [Trainer(make_sae(c), train_cfg) for c in sae_cfgs]   # widths, k, lambda...
    histories = fit_together(trainers, cache.batches(hook, batch_size=4096))

Each batch is read (and verified) once and every trainer takes its step on it, so a sweep
of ``S`` SAEs reads the cache once instead of ``S`` times. Each trainer ends exactly where
its own ``fit`` on the same batches would (the same operations in the same order; tested),
with its own checkpoints; a sweep resumes when every trainer's checkpoint is at the same
step. The trainers must share ``d_in`` and ``n_steps``; architectures, widths, sparsities,
learning rates may differ. What it saves is the data's cost, once per extra SAE: measured
in ``benchmarks/one_pass_sweep.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from torch import Tensor

from saelib.data import batches_from_step
from saelib.progress import progress_bar
from saelib.training import Trainer

__all__ = ["fit_together"]


def fit_together(
    trainers: Sequence[Trainer], batches: Iterable[Tensor], progress: bool = True
) -> list[list[dict]]:
    """Train every trainer to its ``n_steps`` on the same batches; returns their histories.

    Resumes each from its ``checkpoint_dir`` when there is one; all must then be at the
    same step. Checkpoints are written per trainer as its ``TrainConfig`` says.
    """
    if not trainers:
        raise ValueError("trainers must hold at least one Trainer, got none")
    n_steps = {t.cfg.n_steps for t in trainers}
    d_in = {t.sae.cfg.d_in for t in trainers}
    if len(n_steps) > 1 or len(d_in) > 1:
        raise ValueError(
            f"trainers must share n_steps and d_in to share batches, got n_steps "
            f"{sorted(n_steps)} and d_in {sorted(d_in)}"
        )
    for t in trainers:
        directory = t.cfg.checkpoint_dir
        if t.restored_from is None and directory and t.has_checkpoint(directory):
            t.load_checkpoint(directory)
    steps = [t.step for t in trainers]
    if len(set(steps)) > 1:
        raise ValueError(
            f"trainers are at different steps {steps} (their checkpoints); a shared stream "
            f"needs them at the same step: delete the checkpoints that are ahead or behind"
        )
    step, total = steps[0], n_steps.pop()
    stream = batches_from_step(batches, step)
    if step == 0:
        first = next(stream)
        for t in trainers:
            t._initialise(t._batch(first))
        stream = itertools.chain([first], stream)
    bar = progress_bar(progress, total=total, initial=step, desc=f"train x{len(trainers)}")
    try:
        for x in itertools.islice(stream, total - step):
            for t in trainers:
                t.train_step(t._batch(x))
                every = t.cfg.checkpoint_every
                if every and t.step % every == 0:
                    t.save_checkpoint(t.cfg.checkpoint_dir)
            bar.update(1)
    finally:
        bar.close()
    if any(t.step < total for t in trainers):
        raise ValueError(f"batches ran out after {trainers[0].step} of n_steps={total} steps")
    for t in trainers:
        if t.cfg.checkpoint_dir:
            t.save_checkpoint(t.cfg.checkpoint_dir)
    return [t.history for t in trainers]
