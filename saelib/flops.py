"""Analytic FLOP counts of SAEs: encode, decode, forward, a training step, a training run.

Convention (the one of ``torch.utils.flop_counter`` and of Kaplan et al. 2020): a
multiply-add is 2 FLOPs, so ``a [m, k] @ b [k, n]`` costs ``2 m k n``.

Counted: every product with a weight matrix. Ignored, because they are O(n) or O(d) per
sample against O(n d) for the products: elementwise work (biases, nonlinearities, norms),
selection (top-k, thresholds), gathers and scatters, and the optimizer's per-parameter update
(Adam is ~10 FLOPs per parameter per step, against ``6 * batch`` per weight for the matmuls).
The counts are those of saelib's code as it runs (dense products where it uses them, as in
training); tests/test_flops.py checks them against ``FlopCounterMode`` on the SAEs and the
Trainer. The ITO solvers, sparse coding and encoder fits are counted in
``saelib.coding.cost`` with the same convention.

Per-sample functions return FLOPs for one row of ``x``; a method's total is training plus
inference, for example ``training_flops(cfg, n_steps, batch_size) + n_test *
sae_forward_flops(cfg)``.
"""

from __future__ import annotations

from saelib.saes.config import AFFINE_ENCODERS, LINEAR_ENCODERS, SAEConfig
from saelib.validation import check_int, check_real, require

__all__ = [
    "check_config",
    "encoder_matmuls",
    "sae_decode_flops",
    "sae_encode_flops",
    "sae_forward_flops",
    "sae_train_step_flops",
    "training_flops",
]


def check_config(cfg: object) -> SAEConfig:
    """``cfg`` if it is an ``SAEConfig``; else a ValueError naming it."""
    require(isinstance(cfg, SAEConfig), "cfg", type(cfg).__name__, "a saelib.saes.SAEConfig")
    return cfg


# -- SAEs ------------------------------------------------------------------------------------------
def encoder_matmuls(cfg: SAEConfig) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each matmul the encoder applies to one sample."""
    if cfg.architecture == "mlp":
        widths = (cfg.d_in, *cfg.mlp_hidden, cfg.d_sae)
        return list(zip(widths[:-1], widths[1:], strict=True))
    if cfg.architecture == "lista":  # the first affine map, then per step z W_dec and r W_t
        step = [(cfg.d_sae, cfg.d_in), (cfg.d_in, cfg.d_sae)]
        return [(cfg.d_in, cfg.d_sae), *step * cfg.lista_steps]
    if cfg.architecture == "mp":  # per pursuit step the correlations r @ W_dec.T (at most)
        return [(cfg.d_in, cfg.d_sae)] * (cfg.mp_steps or cfg.d_in)
    if cfg.architecture == "gated":  # gate path and magnitude path: two products with x_c
        return [(cfg.d_in, cfg.d_sae), (cfg.d_in, cfg.d_sae)]
    assert cfg.architecture in LINEAR_ENCODERS
    return [(cfg.d_in, cfg.d_sae)]


def sae_encode_flops(cfg: SAEConfig) -> int:
    """FLOPs to encode one sample.

    Linear encoders (relu, topk, batchtopk, jumprelu; tied or not): ``2 d_in d_sae``, from
    ``x_c [1, d_in] @ W_enc [d_in, d_sae]``. Gated: ``4 d_in d_sae``, two such products
    (``x_c @ W_gate`` and ``x_c @ (W_gate * exp(r_mag))``; forming the scaled matrix is
    once per batch, not per sample, and elementwise: ignored). MLP: ``sum_i 2 w_i w_{i+1}``
    over the widths ``(d_in, *mlp_hidden, d_sae)``, one product per layer. MP-SAE:
    ``2 d_in d_sae`` per pursuit step, ``mp_steps`` (or ``d_in``) of them: an upper bound,
    as samples stop early (the per-step dot products and updates, ``4 d_in``, ignored). LISTA:
    ``2 d_in d_sae (1 + 2 lista_steps)``, the first affine map and per step the decode
    ``z_t @ W_dec`` and ``r_t @ W_steps[t]``. Ignored: the
    b_dec subtraction, biases, ReLU, top-k / threshold selection.
    """
    return sum(2 * fan_in * fan_out for fan_in, fan_out in encoder_matmuls(check_config(cfg)))


def sae_decode_flops(cfg: SAEConfig, l0: int | float | None = None) -> int | float:
    """FLOPs to decode one sample.

    Dense (``l0=None``, what ``SAE.decode`` does): ``2 d_sae d_in``, from
    ``f [1, d_sae] @ W_dec [d_sae, d_in]``. Sparse (``l0`` active latents, a gather of
    their atoms): ``2 l0 d_in``, one multiply-add per active latent and output dimension.
    ``l0`` may be a fractional mean L0, then the result is a float. Ignored: ``+ b_dec``.
    """
    cfg = check_config(cfg)
    if l0 is None:
        return 2 * cfg.d_sae * cfg.d_in
    return 2 * check_real("l0", l0, 0, cfg.d_sae) * cfg.d_in


def sae_forward_flops(cfg: SAEConfig, l0: int | float | None = None) -> int | float:
    """FLOPs of one sample's forward pass: ``sae_encode_flops + sae_decode_flops(l0)``."""
    return sae_encode_flops(cfg) + sae_decode_flops(cfg, l0)


def sae_train_step_flops(
    cfg: SAEConfig, batch_size: int, *, aux_k: bool = False, orthogonality: bool = False
) -> int:
    """FLOPs of one training step (``Trainer.train_step``) on a batch: forward plus backward.

    Backward = 2x forward per matmul (the standard rule: the gradient with respect to
    each of its two operands is one product of the same size), so a matmul whose operands
    both need gradients costs 3x its forward. Applied per matmul this is exact for
    saelib's graphs, with the cases where one operand needs no gradient counted at
    2x: the first encoder layer of the linear encoders (relu, topk, batchtopk, jumprelu, lista:
    their affine map skips the input gradient and gets ``b_dec``'s from a column sum, see
    ``saelib.saes.base._Affine``) and of the others when ``apply_b_dec_to_input=False``
    (the input is data), and the Gated SAE's auxiliary reconstruction
    ``ReLU(pi_gate) @ sg(W_dec)`` (``2 d_sae d_in`` forward, the same again backward).
    MP-SAE: its pursuit's products only select atoms, so they carry no gradient (1x).
    Matryoshka adds its inner prefix reconstructions, built slice by slice:
    ``2 m_{G-1} d_in`` forward per sample (``m_{G-1}`` the largest inner width), 3x with
    the backward.
    The decoder is the dense one: this counts the dense twin (``TrainConfig(
    sparse_topk=False)``); TopK's default sparse path does the decoder and the encoder's
    weight gradient on the ``k`` active latents only.

    ``aux_k``: add the aux-k reconstruction of dead latents, a dense
    ``[batch, d_sae] @ W_dec`` (``3 * 2 d_sae d_in`` per sample); it only runs when some
    latent is dead, so this is an upper bound. ``orthogonality``: add the decoder's
    nearest-neighbour search ``atoms @ atoms.T``, ``2 d_sae^2 d_in`` per step (no gradient;
    independent of the batch). Ignored: losses, elementwise ops, the gradient projection,
    decoder renormalisation and the Adam update (all O(parameters) per step).
    """
    cfg = check_config(cfg)
    batch_size = check_int("batch_size", batch_size, 1)
    decode = sae_decode_flops(cfg)
    per_sample = 3 * (sae_encode_flops(cfg) + decode)
    if cfg.architecture == "mp":  # the pursuit's products pick atoms: no gradient through them
        per_sample = sae_encode_flops(cfg) + 3 * decode
    elif cfg.architecture in (*AFFINE_ENCODERS, "lista") or not cfg.apply_b_dec_to_input:
        fan_in, fan_out = encoder_matmuls(cfg)[0]
        n_input_products = 2 if cfg.architecture == "gated" else 1
        per_sample -= n_input_products * 2 * fan_in * fan_out  # no gradient for the data
    if cfg.architecture == "gated":
        per_sample += 2 * decode  # frozen-decoder auxiliary reconstruction
    if cfg.architecture == "matryoshka" and len(cfg.matryoshka_widths) > 1:
        # the inner prefixes, built slice by slice up to the largest inner width
        per_sample += 3 * 2 * cfg.matryoshka_widths[-2] * cfg.d_in
    if aux_k:
        per_sample += 3 * decode
        if cfg.architecture == "mp":  # aux-k ranks by the first step's correlations: their
            per_sample += 2 * decode  # gradient to W_dec and b_dec, two more products
    per_step = 2 * cfg.d_sae**2 * cfg.d_in if orthogonality else 0
    return batch_size * per_sample + per_step


def training_flops(
    cfg: SAEConfig,
    n_steps: int,
    batch_size: int,
    *,
    aux_k: bool = False,
    orthogonality: bool = False,
) -> int:
    """FLOPs of a whole training run: ``n_steps * sae_train_step_flops(cfg, batch_size)``."""
    n_steps = check_int("n_steps", n_steps, 1)
    step = sae_train_step_flops(cfg, batch_size, aux_k=aux_k, orthogonality=orthogonality)
    return n_steps * step
