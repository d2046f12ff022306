"""Training an SAE: one config, one loop, checkpoints that resume to the same weights.

    trainer = Trainer(sae, TrainConfig(n_steps=2_000, lr=1e-3, sparsity_coeff=3e-3))
    history = trainer.fit(TensorBatches(x, batch_size=1024))

Each step: Adam on ``mse + lambda(t) * sparsity`` (+ aux-k on dead latents, + a
decoder orthogonality penalty), with linear lr warm-up/decay and lambda warm-up;
optionally a unit-norm decoder whose gradient is projected before the step.

Faults stop the run where they happen instead of training on: a batch of the wrong shape
or dtype, or holding NaN/inf, raises before the step, naming it; a NaN or inf loss or
gradient stops the run at that step, naming the likely cause (or, with
``on_nonfinite="skip"``, that batch is skipped with a warning). Batches are cast to the
SAE's dtype: float16/bfloat16 widen exactly, float64 rounds to float32.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

from saelib import losses
from saelib.checkpoint import (
    contiguous,
    find_checkpoint,
    flatten_optimizer,
    load_newest,
    run_settings,
    sigint_deferred,
    unflatten_optimizer,
    write_checkpoint,
)
from saelib.data import batches_from_step
from saelib.initialisation import b_dec_init
from saelib.progress import progress_bar
from saelib.saes import SAE, SAEConfig, make_sae
from saelib.saes.sparse import Workspace
from saelib.validation import check_choice, check_int, check_real, is_real, require

BDecInit = Literal["zeros", "mean", "geometric_median"]
OnNonfinite = Literal["raise", "skip"]
Precision = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train (what to train is the SAEConfig)."""

    n_steps: int
    """Optimizer steps; schedules are defined over this many."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    lr_warmup_steps: int = 0
    """Linear warm-up of the lr from 0 over this many first steps."""
    lr_decay_steps: int = 0
    """Linear decay of the lr to 0 over this many last steps."""
    sparsity_coeff: float = 0.0
    """lambda: weight of the SAE's sparsity term (L1 family, or L0 for JumpReLU)."""
    sparsity_warmup_steps: int = 0
    """Linear warm-up of lambda from 0 (Anthropic April 2024 update)."""
    normalize_decoder: bool = True
    """Keep decoder atoms at unit norm, projecting their gradient before each step."""
    init_encoder_from_decoder: bool = True
    """Start with W_enc = W_dec.T (Gao et al. 2024); linear encoders only."""
    init_b_dec: BDecInit = "zeros"
    """Initial b_dec from the first batch: zeros, mean or geometric_median."""
    aux_k: int | None = None
    """Aux-k: reconstruct the residual from this many dead latents (Gao et al. use 256)."""
    aux_k_coeff: float = 1 / 32
    """Weight of the aux-k loss."""
    dead_after_tokens: int = 10_000_000
    """A latent is dead after this many training tokens without firing (Gao et al.: 10M)."""
    sparse_topk: bool = True
    """TopK/BatchTopK: train on the sparse path (saelib.saes.sparse: same values and
    gradients, only the encoder product dense); False forces the eager dense twin."""
    precision: Precision = "float32"
    """"bfloat16": mixed precision. Weights, Adam state, loss and gradients stay fp32
    (the master weights); the products run in bf16 under ``torch.autocast``. On the
    sparse TopK path only the product that chooses the active latents is bf16: their
    values are recomputed exactly in fp32. Pays where the hardware has bf16 units
    (CPUs with AMX or AVX512-BF16, recent GPUs); elsewhere it can be slower."""
    orthogonality_coeff: float = 0.0
    """Weight of the decoder nearest-neighbour cosine penalty (Till 2024)."""
    orthogonality_power: float = 1.0
    """Exponent of that penalty; > 1 is the superlinear variant."""
    on_nonfinite: OnNonfinite = "raise"
    """A step whose loss or gradient is NaN or inf: "raise" stops the run there, naming
    the step and the likely cause; "skip" leaves weights and optimizer untouched for that
    batch, warns, and counts it (``skipped`` in the history). A non-finite first batch
    raises either way: it initialises b_dec."""
    log_every: int = 50
    """Record the loss terms, L0 and dead fraction every this many steps."""
    checkpoint_dir: str | None = None
    """Where to save checkpoints (safetensors + JSON + checksums; the previous one is
    kept as ``<checkpoint_dir>.old``); None disables them."""
    checkpoint_every: int = 0
    """Save a checkpoint every this many steps (0: only at the end or on interruption)."""
    device: str = "cpu"
    """Device to train on; batches are moved there."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_int("TrainConfig.n_steps", self.n_steps, low=1)
        for name in ("lr", "eps", "aux_k_coeff", "orthogonality_power"):
            check_real(f"TrainConfig.{name}", getattr(self, name), low=0, open_low=True)
        for name in ("sparsity_coeff", "orthogonality_coeff"):
            check_real(f"TrainConfig.{name}", getattr(self, name), low=0)
        ok = isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
        ok = ok and all(is_real(b) and 0 <= b < 1 for b in self.betas)
        require(ok, "TrainConfig.betas", self.betas, "two numbers in [0, 1), e.g. (0.9, 0.999)")
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps"):
            check_int(f"TrainConfig.{name}", getattr(self, name), low=0)
        if self.lr_warmup_steps + self.lr_decay_steps > self.n_steps:
            raise ValueError(
                f"TrainConfig.lr_warmup_steps + lr_decay_steps must be at most "
                f"n_steps={self.n_steps}, got {self.lr_warmup_steps} + {self.lr_decay_steps}"
            )
        check_choice("TrainConfig.init_b_dec", self.init_b_dec, get_args(BDecInit))
        check_choice("TrainConfig.on_nonfinite", self.on_nonfinite, get_args(OnNonfinite))
        check_choice("TrainConfig.precision", self.precision, get_args(Precision))
        if self.aux_k is not None:
            check_int("TrainConfig.aux_k", self.aux_k, low=1)
        check_int("TrainConfig.dead_after_tokens", self.dead_after_tokens, low=1)
        check_int("TrainConfig.log_every", self.log_every, low=1)
        check_int("TrainConfig.checkpoint_every", self.checkpoint_every, low=0)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"TrainConfig.device must be a torch device such as 'cpu', 'cuda', 'cuda:1' "
                f"or 'mps', got {self.device!r}"
            ) from None
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise ValueError("TrainConfig.checkpoint_every needs checkpoint_dir to be set")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        factor = 1.0
        if step < self.lr_warmup_steps:
            factor = (step + 1) / self.lr_warmup_steps
        steps_left = self.n_steps - step
        if steps_left <= self.lr_decay_steps:
            factor = min(factor, steps_left / self.lr_decay_steps)
        return self.lr * factor

    def sparsity_coeff_at(self, step: int) -> float:
        if step < self.sparsity_warmup_steps:
            return self.sparsity_coeff * (step + 1) / self.sparsity_warmup_steps
        return self.sparsity_coeff


class Trainer:
    """Trains one SAE; holds the optimizer, step counter and dead-latent statistics."""

    def __init__(self, sae: SAE, cfg: TrainConfig):
        if sae.needs_unit_decoder and not cfg.normalize_decoder:
            why = (
                "a matching-pursuit step is a projection only onto unit-norm atoms"
                if sae.cfg.architecture == "mp"
                else "a plain L1 penalty (gated, or sparsity_penalty='l1') lets the decoder "
                "grow and the penalty vanish (or use sparsity_penalty='l1_dec_norm')"
            )
            raise ValueError(
                f"TrainConfig.normalize_decoder=False cannot train this "
                f"{sae.cfg.architecture} SAE: {why}; use normalize_decoder=True"
            )
        self.cfg = cfg
        self.sae = sae.to(cfg.device)
        # One fused kernel for all parameters (CPU and CUDA): about 4x faster than the
        # per-parameter loop on CPU, same update up to rounding.
        fused = torch.device(cfg.device).type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
        )
        self.step = 0
        self.tokens_seen = 0
        self.skipped = 0  # batches skipped as non-finite (on_nonfinite="skip")
        self.restored_from: Path | None = None  # the checkpoint folder loaded, if any
        # Training tokens since each latent last fired; kept on the device (no host sync).
        self.tokens_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=cfg.device)
        self.history: list[dict] = []
        # the sparse path's [batch, d_sae] pre-activations: one buffer, reused every step
        self.workspace = Workspace()

    # -- the loop -----------------------------------------------------------------
    def fit(self, batches: Iterable[Tensor], resume: bool = True) -> list[dict]:
        """Train until ``cfg.n_steps``; resume from ``cfg.checkpoint_dir`` when one exists.

        ``batches`` yields ``[batch, d_in]`` tensors. To resume on the same batches, it is
        restarted at the saved step: through ``batches.iter_from(step)`` when it has one
        (``TensorBatches``, ``ShardedBatches``), else by skipping that many batches.
        Interrupting (Ctrl-C) saves a checkpoint before re-raising. A trainer already
        restored (``from_checkpoint``, ``load_checkpoint``) continues from its state.
        Batches are cast to the SAE's dtype; a bad batch or a non-finite step raises (see
        ``TrainConfig.on_nonfinite``), after which the last checkpoint is still intact.
        """
        cfg = self.cfg
        resumable = resume and self.restored_from is None and cfg.checkpoint_dir
        if resumable and self.has_checkpoint(cfg.checkpoint_dir):
            self.load_checkpoint(cfg.checkpoint_dir)
        stream = batches_from_step(batches, self.step)
        if self.step == 0:
            first = next(stream)
            x = self._batch(first)
            if not bool(torch.isfinite(x).all()):
                raise ValueError(
                    f"the first batch (step 0, used to initialise b_dec) {_nonfinite_count(x)}; "
                    f"drop or fix those rows, e.g. x[torch.isfinite(x).all(dim=1)]"
                )
            self._initialise(x)
            stream = itertools.chain([first], stream)
        bar = progress_bar(
            cfg.progress and self.is_main, total=cfg.n_steps, initial=self.step, desc="train"
        )
        try:
            with sigint_deferred() as interrupted:
                while self.step < cfg.n_steps:
                    x = next(stream, None)
                    if x is None:
                        raise ValueError(
                            f"batches ran out after {self.step} of n_steps={cfg.n_steps} steps; "
                            f"pass an endless source (TensorBatches, ShardedBatches) or more data"
                        )
                    record = self.train_step(self._batch(x))
                    if record is not None:
                        bar.set_postfix(mse=f"{record['mse']:.3g}", l0=f"{record['l0']:.1f}")
                    bar.update(1)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint(cfg.checkpoint_dir)
                    if interrupted():  # Ctrl-C lands between steps, never inside one
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if cfg.checkpoint_dir and self.save_on_interrupt:
                self.save_checkpoint(cfg.checkpoint_dir)
            raise
        finally:
            bar.close()
        if cfg.checkpoint_dir:
            self.save_checkpoint(cfg.checkpoint_dir)
        return self.history

    def _batch(self, x: object) -> Tensor:
        """Batch ``x`` checked for shape and dtype, on the device in the SAE's dtype."""
        d_in, step = self.sae.cfg.d_in, self.step
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != d_in:
            shown = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"batch at step {step} must be a tensor [batch, {d_in}], got {shown}")
        if not x.is_floating_point():
            raise ValueError(
                f"batch at step {step} has dtype {x.dtype}; SAEs train on floating-point "
                f"activations: convert with x.float()"
            )
        return x.to(self.cfg.device, self.sae.W_dec.dtype, non_blocking=True)

    @torch.no_grad()
    def _initialise(self, x: Tensor) -> None:
        """Apply the initialisation tricks once, before the first step."""
        if self.cfg.init_encoder_from_decoder:
            self.sae.init_encoder_from_decoder_()
        b_dec = b_dec_init(x, self.cfg.init_b_dec)
        if b_dec is not None:
            self.sae.b_dec.copy_(b_dec)

    def train_step(self, x: Tensor) -> dict | None:
        """One optimizer step on ``x [batch, d_in]``; returns a log record every log_every."""
        cfg, sae = self.cfg, self.sae
        n_rows = x.shape[0]  # the global batch (a data-parallel rank trains on its slice)
        x = self._local(x)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        lam = cfg.sparsity_coeff_at(self.step)

        dead = self.tokens_since_fired >= cfg.dead_after_tokens
        low = cfg.precision == "bfloat16"
        with torch.autocast(x.device.type, torch.bfloat16, enabled=low):
            total, terms, out = sae.training_loss(
                x, lam, sparse=cfg.sparse_topk, workspace=self.workspace
            )
            if cfg.aux_k is not None:
                residual = (x - out.x_hat).detach()
                terms["aux_k"] = sae.aux_k_loss(x, residual, out, dead, cfg.aux_k)
                total = total + cfg.aux_k_coeff * terms["aux_k"]
            if cfg.orthogonality_coeff > 0:
                terms["orthogonality"] = losses.orthogonality_penalty(
                    sae.W_dec, cfg.orthogonality_power
                )
                total = total + cfg.orthogonality_coeff * terms["orthogonality"]
        total = total.float()  # a bf16 term (autocast) would make the logged loss bf16

        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        total = self._reduce_gradients(total)
        if not self._finite(total):
            return self._nonfinite(x, total, lam)
        if cfg.normalize_decoder:
            sae.project_decoder_grad_()
        self.optimizer.step()
        if cfg.normalize_decoder:
            sae.normalize_decoder_()
        sae.update_statistics(out)

        fired = self._reduce_fired(out.fired())
        self.tokens_since_fired.add_(n_rows).masked_fill_(fired, 0)
        self.tokens_seen += n_rows
        self.step += 1
        if self.step % cfg.log_every and self.step != cfg.n_steps:
            return None
        record = {"step": self.step, "lr": cfg.lr_at(self.step - 1), "sparsity_coeff": lam}
        values = torch.stack([v.detach().double() for v in (*terms.values(), out.l0())])
        values = self._reduce_log(values)
        # L0 and the dead count sum over latents (which a latent-sharded rank holds a block of)
        l0, n_dead = self._sum_over_latents(torch.stack([values[-1], dead.sum().double()]))
        record.update(zip(terms, values[:-1].tolist(), strict=True))
        record["loss"] = float(total.detach())
        record["l0"] = float(l0)
        record["dead_fraction"] = float(n_dead.float() / self.sae.cfg.d_sae)  # as a float32 mean
        if cfg.on_nonfinite == "skip":
            record["skipped"] = self.skipped
        self.history.append(record)
        return record

    # -- hooks the distributed trainers override (saelib.data_parallel: rows split across
    # ranks; saelib.latent_sharded_training: latents split across ranks) ------------------
    is_main = True
    """Whether this process writes checkpoints and shows progress (rank 0)."""
    save_on_interrupt = True
    """Save a checkpoint on Ctrl-C (between steps)."""

    def _local(self, x: Tensor) -> Tensor:
        """The rows of the global batch ``x`` this process trains on: all of them."""
        return x

    def _reduce_gradients(self, total: Tensor) -> Tensor:
        """Combine the gradients (and loss) of the processes sharing a batch: nothing here."""
        return total

    def _reduce_fired(self, fired: Tensor) -> Tensor:
        """``[d_sae]`` bool: latents that fired anywhere in the global batch."""
        return fired

    def _reduce_log(self, values: Tensor) -> Tensor:
        """Logged per-batch means (loss terms, L0) over the global batch."""
        return values

    def _sum_over_latents(self, values: Tensor) -> Tensor:
        """Logged sums over the latents (L0, dead count) over all of them: this process
        holds them all."""
        return values

    def has_checkpoint(self, directory: str | Path) -> bool:
        """Whether ``directory`` holds a checkpoint to resume from (unverified)."""
        return find_checkpoint(directory) is not None

    def _finite(self, total: Tensor) -> bool:
        """Whether the loss and every gradient are finite: one host sync per step.

        One sum per gradient (NaN and inf propagate through sums; a sum overflowing
        would need gradients near 1e38, a run as good as diverged): about 1% of a step.
        """
        sums = [p.grad.sum() for p in self.sae.parameters() if p.grad is not None]
        return bool(torch.isfinite(torch.stack([total.detach(), *sums]).sum()))

    def _nonfinite(self, x: Tensor, total: Tensor, lam: float) -> None:
        """Raise (or, with on_nonfinite="skip", warn and skip) a non-finite step."""
        step, cfg = self.step, self.cfg
        loss = float(total.detach())
        what = f"loss is {loss}" if not math.isfinite(loss) else "a gradient is NaN or inf"
        if not bool(torch.isfinite(x).all()):
            error = ValueError
            cause = f"the batch {_nonfinite_count(x)}: the data is bad"
            hint = "drop or fix those rows in the data, e.g. x[torch.isfinite(x).all(dim=1)]"
        else:
            error = FloatingPointError
            amax = float(x.abs().max())
            cause = f"the batch is finite (largest |x| = {amax:.3g})"
            hint = (
                f"scale the data (e.g. to mean norm sqrt(d_in): saelib.lm.scaling) if |x| is "
                f"large, else lower TrainConfig.lr (now {cfg.lr}) or sparsity_coeff (now {lam})"
            )
        message = f"step {step} of n_steps={cfg.n_steps}: the {what}; {cause}"
        if cfg.on_nonfinite == "raise":
            raise error(f"{message}; {hint}, or set TrainConfig(on_nonfinite='skip')")
        warnings.warn(f"{message}; skipped this batch (on_nonfinite='skip')", stacklevel=3)
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.step += 1
        return None

    # -- checkpoints: safetensors for tensors, JSON for the rest ------------------
    def save_checkpoint(self, directory: str | Path) -> None:
        """Write the SAE, optimizer and trainer state, atomically, with checksums.

        The new checkpoint is written to ``<dir>.tmp``; the previous one is renamed to
        ``<dir>.old`` (and kept) before the new one takes its name, so at every instant
        one complete checkpoint exists, and a damaged one has an intact predecessor
        (``load_checkpoint`` falls back to ``.old``). Ctrl-C is held until the save is done.
        """
        with sigint_deferred() as interrupted:
            self._save_checkpoint(Path(directory))
        if interrupted():
            raise KeyboardInterrupt

    def _save_checkpoint(self, directory: Path) -> None:
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors = {
            "sae": contiguous(self.sae.state_dict()),
            "optimizer": opt_tensors,
            "trainer": {"tokens_since_fired": self.tokens_since_fired.cpu()},
        }
        meta = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "skipped": self.skipped,
            "history": self.history,
            "optimizer": opt_meta,
            "sae_config": self.sae.cfg.to_dict(),
            "train_config": asdict(self.cfg),
            **self._checkpoint_extras(),
        }
        write_checkpoint(directory, tensors, meta)

    def _checkpoint_extras(self) -> dict:
        """More JSON metadata for the checkpoint (a latent-sharded rank's block): none."""
        return {}

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore the newest intact checkpoint in ``directory`` (or ``<directory>.old``).

        Every file is checked against the checksums stored at saving; a damaged
        ``directory`` falls back to ``<directory>.old`` with a warning naming both, and
        a ValueError says so when neither is intact. The SAE config and the training
        settings that shape the run (everything but device, progress, logging and
        checkpoint settings) must match; otherwise the resumed run would not be the run
        that was started.
        """
        self._restore(*load_newest(directory))

    def _restore(self, directory: Path, tensors: dict, meta: dict) -> None:
        saved = SAEConfig.from_dict(meta["sae_config"])
        if saved != self.sae.cfg:
            raise ValueError(
                f"checkpoint in {directory} is for {saved}, not for this trainer's SAE "
                f"{self.sae.cfg}; use another checkpoint_dir"
            )
        # a setting added since the checkpoint was saved had its default then
        defaults = asdict(TrainConfig(n_steps=1))
        ours = run_settings(asdict(self.cfg))
        theirs = run_settings({**defaults, **meta["train_config"]})
        changed = sorted(k for k in ours if ours[k] != theirs.get(k))
        if changed:
            detail = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in changed)
            raise ValueError(
                f"checkpoint in {directory} was trained with other TrainConfig settings "
                f"({detail}); resume with the same settings or use another checkpoint_dir"
            )
        device = self.cfg.device
        try:
            self.sae.load_state_dict(tensors["sae"])
            opt_tensors = {k: v.to(device) for k, v in tensors["optimizer"].items()}
            self.optimizer.load_state_dict(unflatten_optimizer(opt_tensors, meta["optimizer"]))
            fired = tensors["trainer"]["tokens_since_fired"]
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(
                f"checkpoint {directory} does not fit this trainer ({err}); "
                f"use another checkpoint_dir"
            ) from None
        self.tokens_since_fired = fired.to(device)
        self.step, self.tokens_seen = meta["step"], meta["tokens_seen"]
        self.skipped = meta.get("skipped", 0)
        self.history = meta["history"]
        self.restored_from = directory

    @classmethod
    def from_checkpoint(cls, directory: str | Path, **overrides) -> Trainer:
        """Rebuild SAE and trainer from a checkpoint directory alone.

        The folder is self-locating: the trainer saves its next checkpoints to
        ``directory`` (where the checkpoint is now), not to the ``checkpoint_dir`` stored
        inside it, so a copied or moved folder continues there. ``overrides`` replace
        stored TrainConfig fields (those that do not change the weights, e.g. ``device``).
        """
        found, tensors, meta = load_newest(directory)
        train_cfg = {**meta["train_config"], "checkpoint_dir": str(directory), **overrides}
        train_cfg["betas"] = tuple(train_cfg["betas"])
        trainer = cls(make_sae(SAEConfig.from_dict(meta["sae_config"])), TrainConfig(**train_cfg))
        trainer._restore(found, tensors, meta)
        return trainer


def _nonfinite_count(x: Tensor) -> str:
    """``"holds 1 NaN and 0 inf values (first in row 3)"`` for a batch ``x [batch, d_in]``."""
    bad_rows = (~torch.isfinite(x)).any(dim=1).nonzero()
    n_nan, n_inf = int(x.isnan().sum()), int(x.isinf().sum())
    return f"holds {n_nan} NaN and {n_inf} inf values (first in row {int(bad_rows[0])})"
