"""Many small SAEs of one shape trained at once, as one stacked model.

Toy chapters train hundreds of SAEs of a few dozen weights each. There a step of the
library's ``Trainer`` is almost all Python and dispatch overhead, so ``S`` such SAEs are
trained here as one model with stacked weights (``W_enc [S, d_in, d_sae]``, ...) and
batched products: one step serves every member. Members stay independent: the loss is the
sum of the members' losses, and Adam and the decoder projection act elementwise or per
member, so each member follows the path the ``Trainer`` would take it on, up to float
rounding (``tests/test_stacked.py`` checks this against the Trainer). Each member keeps its
own initialisation, batch stream, learning rate, sparsity coefficient and orthogonality
penalty; the schedules' shapes (steps, warm-up, decay) are shared.

    saes = [make_sae(cfg) for cfg in cfgs]                  # trained in place
    batches = [TensorBatches(x, 128, seed=cfg.seed) for cfg in cfgs]
    histories = train_stacked(saes, train_cfgs, batches)    # one log per member

Each step, for member ``s`` with batch ``x_s [B, d_in]``::

    pre_s = (x_s - b_dec_s) @ W_enc_s + b_enc_s            # W_enc_s = W_dec_s^T when tied
    f_s   = ReLU(pre_s)  or  ReLU(TopK_k(pre_s))
    loss_s = mean_b ||x_s - f_s W_dec_s - b_dec_s||^2 + lambda_s(t) * penalty(f_s)
             + ortho_s * mean_i |cos(d_i, d_nn(i))|^p_s

Supported: ReLU (untied or tied; ``l1`` or ``l1_dec_norm`` penalty) and TopK SAEs with
``TrainConfig``'s schedules, unit-norm decoder and orthogonality penalty. A non-finite loss
stops training at its step, naming the members. Anything else (other architectures, aux-k,
checkpoints, skipping non-finite batches) raises: use the ``Trainer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

import torch
from torch import Tensor

from saelib.initialisation import b_dec_init
from saelib.saes import SAE
from saelib.saes.base import LinearEncoderSAE
from saelib.training import TrainConfig

__all__ = ["STACKED_ARCHITECTURES", "stacked_orthogonality", "train_stacked"]

STACKED_ARCHITECTURES = ("relu", "topk")

# TrainConfig fields that may differ between members; the rest must be equal.
_PER_MEMBER = {"lr", "sparsity_coeff", "orthogonality_coeff", "orthogonality_power"}
# Settings the stacked loop does not implement.
_UNSUPPORTED = {
    "aux_k": None,
    "checkpoint_dir": None,
    "checkpoint_every": 0,
    "on_nonfinite": "raise",
}


def train_stacked(
    saes: Sequence[SAE],
    cfgs: Sequence[TrainConfig] | TrainConfig,
    batches: Sequence[Iterable[Tensor]],
) -> list[list[dict]]:
    """Train ``saes`` (in place) together; return each member's log, as ``Trainer.fit`` does.

    ``cfgs``: one ``TrainConfig`` per member, or one for all; members may differ in ``lr``,
    ``sparsity_coeff``, ``orthogonality_coeff`` and ``orthogonality_power`` only.
    ``batches``: one endless source of ``[batch, d_in]`` tensors per member, all of the
    same batch size. Log records (every ``log_every`` steps and at the end) hold ``step``,
    ``lr``, ``sparsity_coeff``, ``mse``, ``sparsity``, ``orthogonality`` (when penalised),
    ``loss`` and ``l0``. The SAEs come back in training mode, as from the Trainer.
    """
    cfgs = [cfgs] * len(saes) if isinstance(cfgs, TrainConfig) else list(cfgs)
    _check_members(saes, cfgs, batches)
    cfg, first = cfgs[0], saes[0].cfg
    device = torch.device(cfg.device)
    streams = [iter(b) for b in batches]
    x = torch.stack([next(s) for s in streams]).to(device)  # [S, B, d_in]
    _initialise(saes, cfgs, x)

    tied, topk = first.tied, first.architecture == "topk"
    params = {
        "W_dec": torch.stack([s.W_dec.detach() for s in saes]).to(device),  # [S, m, d]
        "b_dec": torch.stack([s.b_dec.detach() for s in saes]).to(device),  # [S, d]
        "b_enc": torch.stack([s.b_enc.detach() for s in saes]).to(device),  # [S, m]
    }
    if not tied:
        params["W_enc"] = torch.stack([s.W_enc.detach() for s in saes]).to(device)  # [S, d, m]
    for p in params.values():
        p.requires_grad_(True)
    member = _per_member(cfgs, device)
    adam = _Adam(params, cfg.betas, cfg.eps)
    ortho = bool((member["orthogonality_coeff"] > 0).any())
    histories: list[list[dict]] = [[] for _ in saes]
    penalised = member["orthogonality_coeff"].gt(0).tolist()
    # training tokens since each latent last fired, for the dead fraction the Trainer logs
    since_fired = torch.zeros(len(saes), first.d_sae, dtype=torch.long, device=device)
    dead_after = torch.tensor(cfg.dead_after_tokens, device=device)

    for step in range(cfg.n_steps):
        if step > 0:
            x = torch.stack([next(s) for s in streams]).to(device)
        lam = member["sparsity_coeff"] * _warmup(cfg, step)  # [S]
        W_dec, b_dec = params["W_dec"], params["b_dec"]
        W_enc = W_dec.mT if tied else params["W_enc"]
        x_in = x - b_dec[:, None] if first.apply_b_dec_to_input else x
        pre = torch.baddbmm(params["b_enc"][:, None], x_in, W_enc)  # [S, B, m]
        f = _topk(pre, first.k) if topk else pre.relu()
        x_hat = torch.baddbmm(b_dec[:, None], f, W_dec)
        mse = (x - x_hat).pow(2).sum(-1).mean(-1)  # [S]
        sparsity = (
            _penalty(f, W_dec, first.sparsity_penalty) if not topk else mse.new_zeros(len(saes))
        )
        total = mse + lam * sparsity
        ortho_term = None
        if ortho:
            ortho_term = stacked_orthogonality(W_dec, member["orthogonality_power"])
            total = total + member["orthogonality_coeff"] * ortho_term
        bad = ~torch.isfinite(total)
        if bad.any():  # as the Trainer: stop at the first non-finite loss, naming it
            members = bad.nonzero().flatten().tolist()
            raise FloatingPointError(
                f"train_stacked: step {step} of n_steps={cfg.n_steps}: the loss of member(s) "
                f"{members} is not finite; check their batches for NaN, inf or huge values "
                f"(TensorBatches refuses non-finite rows) or lower their lr"
            )
        for p in params.values():
            p.grad = None
        total.sum().backward()
        if cfg.normalize_decoder:
            _project_decoder_grad_(params["W_dec"])
        lr = member["lr"] * (cfg.lr_at(step) / cfg.lr)
        adam.step(lr)
        if cfg.normalize_decoder:
            with torch.no_grad():
                W = params["W_dec"]
                W.div_(torch.linalg.vector_norm(W, dim=-1, keepdim=True).clamp_min_(1e-12))
        dead = since_fired >= dead_after  # before this step's firing, as in the Trainer
        since_fired.add_(x.shape[1]).masked_fill_(f.amax(1) > 0, 0)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.n_steps:
            columns = {
                "lr": lr, "sparsity_coeff": lam, "mse": mse, "sparsity": sparsity,
                "orthogonality": ortho_term, "loss": total, "l0": (f > 0).sum(-1).float().mean(-1),
                "dead_fraction": dead.float().mean(-1),
            }  # fmt: skip
            values = {k: v.detach().cpu().tolist() for k, v in columns.items() if v is not None}
            for i, history in enumerate(histories):
                record = {"step": done, **{k: v[i] for k, v in values.items()}}
                if not penalised[i]:
                    record.pop("orthogonality", None)
                history.append(record)

    with torch.no_grad():
        for i, sae in enumerate(saes):
            sae.W_dec.copy_(params["W_dec"][i])
            sae.b_dec.copy_(params["b_dec"][i])
            sae.b_enc.copy_(params["b_enc"][i])
            if not tied:
                sae.W_enc.copy_(params["W_enc"][i])
    return histories


def stacked_orthogonality(W_dec: Tensor, power: Tensor | float) -> Tensor:
    """``losses.orthogonality_penalty`` of each member: ``[S]`` from ``W_dec [S, m, d]``.

    Mean over atoms of ``|cos(d_i, d_nn(i))| ** power`` (``power`` a float or ``[S]``),
    nn(i) the nearest other atom, found without autograd; the gradient flows through the
    chosen pairs only, as in the unstacked penalty.
    """
    S, m, _ = W_dec.shape
    if m < 2:
        return W_dec.new_zeros(S)
    atoms = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        cos = (atoms @ atoms.mT).abs_()
        cos.diagonal(dim1=1, dim2=2).fill_(-1.0)  # not itself
        nn = cos.argmax(-1)  # [S, m]
    partner = atoms.gather(1, nn[..., None].expand_as(atoms))
    chosen = (atoms * partner).sum(-1).abs()  # [S, m]
    power = torch.as_tensor(power, dtype=W_dec.dtype, device=W_dec.device)
    return chosen.pow(power.reshape(-1, 1) if power.dim() else power).mean(-1)


# -- the pieces of one step -------------------------------------------------------------
def _topk(pre: Tensor, k: int) -> Tensor:
    """``saes.topk.topk_activation`` over the last dim of ``[S, B, m]``."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def _penalty(f: Tensor, W_dec: Tensor, name: str) -> Tensor:
    """The L1 penalty of non-negative codes ``f [S, B, m]`` per member, ``[S]``."""
    per_latent = f.sum(1)  # [S, m]
    if name == "l1_dec_norm":
        per_latent = per_latent * W_dec.norm(dim=-1)
    return per_latent.sum(-1) / f.shape[1]


@torch.no_grad()
def _project_decoder_grad_(W: Tensor) -> None:
    """``SAE.project_decoder_grad_`` per member: remove each atom's parallel component."""
    if W.grad is None:
        return
    sq_norm = torch.linalg.vector_norm(W, dim=-1, keepdim=True).square_().clamp_min_(1e-24)
    coef = torch.linalg.vecdot(W.grad, W, dim=-1).unsqueeze(-1).div_(sq_norm)
    W.grad.addcmul_(coef, W, value=-1.0)


class _Adam:
    """Adam (``torch.optim.Adam``'s update, no weight decay) with a learning rate per member."""

    def __init__(self, params: dict[str, Tensor], betas: tuple[float, float], eps: float):
        self.params, self.betas, self.eps, self.t = params, betas, eps, 0
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}

    @torch.no_grad()
    def step(self, lr: Tensor) -> None:
        """One update; ``lr [S]``."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, (1 - b2**self.t) ** 0.5
        for k, p in self.params.items():
            if p.grad is None:
                continue
            m, v, g = self.m[k], self.v[k], p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / c2).add_(self.eps)
            step = (lr / c1).reshape(-1, *[1] * (p.dim() - 1))
            p.sub_(step * m / denom)


# -- set-up ---------------------------------------------------------------------------
def _warmup(cfg: TrainConfig, step: int) -> float:
    """The sparsity warm-up factor at ``step`` (1 after warm-up)."""
    if step < cfg.sparsity_warmup_steps:
        return (step + 1) / cfg.sparsity_warmup_steps
    return 1.0


def _per_member(cfgs: Sequence[TrainConfig], device: torch.device) -> dict[str, Tensor]:
    return {
        name: torch.tensor([getattr(c, name) for c in cfgs], dtype=torch.float32, device=device)
        for name in sorted(_PER_MEMBER)
    }


@torch.no_grad()
def _initialise(saes: Sequence[SAE], cfgs: Sequence[TrainConfig], x: Tensor) -> None:
    """What ``Trainer`` does before its first step, member by member."""
    for sae, cfg, first in zip(saes, cfgs, x, strict=True):
        if cfg.init_encoder_from_decoder:
            sae.init_encoder_from_decoder_()
        b_dec = b_dec_init(first.cpu(), cfg.init_b_dec)
        if b_dec is not None:
            sae.b_dec.copy_(b_dec)


def _check_members(
    saes: Sequence[SAE], cfgs: Sequence[TrainConfig], batches: Sequence[Iterable[Tensor]]
) -> None:
    if not saes:
        raise ValueError("train_stacked needs at least one SAE")
    if len(cfgs) != len(saes) or len(batches) != len(saes):
        raise ValueError(
            f"train_stacked needs one TrainConfig and one batch source per SAE: got "
            f"{len(saes)} SAEs, {len(cfgs)} configs, {len(batches)} batch sources"
        )
    first = saes[0].cfg
    if first.architecture not in STACKED_ARCHITECTURES or not isinstance(saes[0], LinearEncoderSAE):
        raise ValueError(
            f"train_stacked trains architectures {list(STACKED_ARCHITECTURES)}, got "
            f"{first.architecture!r}; train it with saelib.training.Trainer"
        )
    if first.architecture == "relu" and first.sparsity_penalty not in ("l1", "l1_dec_norm"):
        raise ValueError(
            f"train_stacked trains the l1 and l1_dec_norm penalties, got sparsity_penalty="
            f"{first.sparsity_penalty!r}; train it with saelib.training.Trainer"
        )
    shape = {k: v for k, v in first.to_dict().items() if k != "seed"}
    for i, sae in enumerate(saes):
        other = {k: v for k, v in sae.cfg.to_dict().items() if k != "seed"}
        if other != shape:
            diff = sorted(k for k in shape if shape[k] != other.get(k))
            raise ValueError(
                f"train_stacked: SAE {i} differs from SAE 0 in {diff}; members must share every "
                f"SAEConfig field but seed"
            )
    shared = {k: v for k, v in asdict(cfgs[0]).items() if k not in _PER_MEMBER}
    for i, c in enumerate(cfgs):
        for k, v in asdict(c).items():
            if k in shared and v != shared[k]:
                raise ValueError(
                    f"train_stacked: TrainConfig {i} has {k}={v!r} where config 0 has "
                    f"{shared[k]!r}; members may differ only in {sorted(_PER_MEMBER)}"
                )
    for name, allowed in _UNSUPPORTED.items():
        if getattr(cfgs[0], name) != allowed:
            raise ValueError(
                f"train_stacked does not implement TrainConfig.{name}="
                f"{getattr(cfgs[0], name)!r}; train with saelib.training.Trainer"
            )
