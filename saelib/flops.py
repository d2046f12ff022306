"""Analytic FLOP counts, for comparing SAEs, deep encoders, ITO and sparse coding at equal compute.

Convention (the one of ``torch.utils.flop_counter`` and of Kaplan et al. 2020): a
multiply-add is 2 FLOPs, so ``a [m, k] @ b [k, n]`` costs ``2 m k n``.

Counted: every product with a weight matrix, a dictionary ``D [n_atoms, d]`` or atoms
gathered from it (matrix-matrix, matrix-vector, batched, and the single-atom operations
``<x, d_j>`` and ``r -= c_j d_j``, ``2 d`` each), and
dense solves at their textbook cost (Golub & Van Loan): LU ``2 m^3 / 3`` to factor and
``2 m^2`` per right-hand side, a triangular solve ``m^2`` per right-hand side, symmetric
eigenvalues ``4 m^3 / 3`` (the tridiagonal reduction). Ignored, because they are O(n) or
O(d) per sample against O(n d) for the products: elementwise work (biases,
nonlinearities, soft-thresholds, momentum, axpys on vectors, norms, dot products of two
vectors), selection (top-k, argmax, thresholds), gathers and scatters, and the
optimizer's per-parameter update (Adam is ~10 FLOPs per parameter per step, against
``6 * batch`` per weight for the matmuls).

The counts are those of saelib's code as it runs (dense products where it uses them,
as in training), not of an idealised implementation; tests/test_flops.py checks their
matmul part against
``FlopCounterMode`` on the SAEs, the Trainer, ``saelib.coding.ito`` and
``saelib.coding.sparse_coding``.

Per-sample functions return FLOPs for one row of ``x``; a chapter's total for a method is
training plus inference, for example ``training_flops(cfg, n_steps, batch_size) +
n_test * sae_forward_flops(cfg)`` against ``ito_setup_flops(...) + n_test *
(ito_flops(...) + 2 * n_atoms * d)`` (the solver's codes, then their reconstruction).
"""

from __future__ import annotations

import math

from saelib.saes.base import LINEAR_ENCODERS, SAEConfig

SOLVERS = ("ista", "fista", "omp", "gradient_pursuit", "matching_pursuit")
ITERATIVE_SOLVERS = ("ista", "fista")  # take n_iter
PURSUIT_SOLVERS = ("omp", "gradient_pursuit", "matching_pursuit")  # take l0
DICT_UPDATES = ("lstsq", "gradient")


# -- validation ------------------------------------------------------------------------------------
# Encoders built on saelib.saes.base._Affine: no input-gradient product in backward.
_AFFINE_ENCODERS = ("relu", "topk", "batchtopk", "jumprelu")


def _int(name: str, value, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and (high is None or value <= high):
        return value
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")


def _cfg(cfg) -> SAEConfig:
    if not isinstance(cfg, SAEConfig):
        raise ValueError(f"cfg must be a saelib.saes.SAEConfig, got {type(cfg).__name__}")
    return cfg


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _l0(value, high: int):
    """A mean L0 may be fractional: any finite number in [0, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(value) and 0 <= value <= high:
        return value
    raise ValueError(f"l0 must be a number in [0, d_sae={high}], got {value!r}")


def _third(numerator: int) -> int:
    """``numerator / 3`` rounded to the nearest integer (for the 2/3 and 4/3 of the solves)."""
    return (numerator + 1) // 3


# -- SAEs ------------------------------------------------------------------------------------------
def _encoder_matmuls(cfg: SAEConfig) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each matmul the encoder applies to one sample."""
    if cfg.architecture == "mlp":
        widths = (cfg.d_in, *cfg.mlp_hidden, cfg.d_sae)
        return list(zip(widths[:-1], widths[1:], strict=True))
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
    over the widths ``(d_in, *mlp_hidden, d_sae)``, one product per layer. Ignored: the
    b_dec subtraction, biases, ReLU, top-k / threshold selection.
    """
    return sum(2 * fan_in * fan_out for fan_in, fan_out in _encoder_matmuls(_cfg(cfg)))


def sae_decode_flops(cfg: SAEConfig, l0: int | float | None = None) -> int | float:
    """FLOPs to decode one sample.

    Dense (``l0=None``, what ``SAE.decode`` does): ``2 d_sae d_in``, from
    ``f [1, d_sae] @ W_dec [d_sae, d_in]``. Sparse (``l0`` active latents, a gather of
    their atoms): ``2 l0 d_in``, one multiply-add per active latent and output dimension.
    ``l0`` may be a fractional mean L0, then the result is a float. Ignored: ``+ b_dec``.
    """
    cfg = _cfg(cfg)
    if l0 is None:
        return 2 * cfg.d_sae * cfg.d_in
    return 2 * _l0(l0, cfg.d_sae) * cfg.d_in


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
    2x: the first encoder layer of the linear encoders (relu, topk, batchtopk, jumprelu:
    their affine map skips the input gradient and gets ``b_dec``'s from a column sum, see
    ``saelib.saes.base._Affine``) and of the others when ``apply_b_dec_to_input=False``
    (the input is data), and the Gated SAE's auxiliary reconstruction
    ``ReLU(pi_gate) @ sg(W_dec)`` (``2 d_sae d_in`` forward, the same again backward).
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
    cfg = _cfg(cfg)
    batch_size = _int("batch_size", batch_size, 1)
    decode = sae_decode_flops(cfg)
    per_sample = 3 * (sae_encode_flops(cfg) + decode)
    if cfg.architecture in _AFFINE_ENCODERS or not cfg.apply_b_dec_to_input:
        fan_in, fan_out = _encoder_matmuls(cfg)[0]
        n_input_products = 2 if cfg.architecture == "gated" else 1
        per_sample -= n_input_products * 2 * fan_in * fan_out  # no gradient for the data
    if cfg.architecture == "gated":
        per_sample += 2 * decode  # frozen-decoder auxiliary reconstruction
    if aux_k:
        per_sample += 3 * decode
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
    n_steps = _int("n_steps", n_steps, 1)
    step = sae_train_step_flops(cfg, batch_size, aux_k=aux_k, orthogonality=orthogonality)
    return n_steps * step


# -- ITO solvers (saelib.coding.ito), per sample ---------------------------------------------------
def ista_iter_flops(n_atoms: int, d: int) -> int:
    """FLOPs of one ISTA iteration for one sample: ``4 n_atoms d``.

    The gradient of ``||c D - x||^2 / 2`` is ``(c D - x) D^T``: one product with ``D``
    (``2 n_atoms d``) and one with ``D^T`` (``2 n_atoms d``). Ignored: the step and the
    soft-threshold (elementwise on ``n_atoms`` entries), the convergence test, the bias.
    """
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    return 4 * n_atoms * d


def fista_iter_flops(n_atoms: int, d: int) -> int:
    """FLOPs of one FISTA iteration for one sample: ``4 n_atoms d``.

    The same two products as ISTA, at the extrapolated point; the momentum and the restart
    test are elementwise on ``n_atoms`` entries (ignored). Per iteration FISTA costs what
    ISTA does.
    """
    return ista_iter_flops(n_atoms, d)


def omp_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``saelib.coding.ito.omp`` to ``l0`` atoms, for one sample (codes only).

    Step ``t = 1..l0``: correlation ``r D^T`` (``2 n_atoms d``), argmax (ignored), the new
    atom's Gram column against the ``t - 1`` chosen ones (``2 (t - 1) d``), the Cholesky
    factor grown by one row with a triangular solve of size ``t - 1`` (``(t - 1)^2``), the
    right-hand side ``<x, d_j>`` (``2 d``), the refit by ``cholesky_solve`` of size ``t``
    (``2 t^2``), and the residual ``x - c_S D_S`` (``2 t d``). Summed: ``2 n_atoms d l0 +
    2 d l0 (l0 + 1) + (l0 - 1) l0 (2 l0 - 1) / 6 + l0 (l0 + 1) (2 l0 + 1) / 3``. ``l0`` is in
    ``[1, min(n_atoms, d)]``, as ``ito.omp`` requires.
    """
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    l0 = _int("l0", l0, 1, min(n_atoms, d))
    triangular = (l0 - 1) * l0 * (2 * l0 - 1) // 6  # sum_t (t - 1)^2
    refits = l0 * (l0 + 1) * (2 * l0 + 1) // 3  # sum_t 2 t^2
    return 2 * n_atoms * d * l0 + 2 * d * l0 * (l0 + 1) + triangular + refits


def gradient_pursuit_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``saelib.coding.ito.gradient_pursuit`` to ``l0`` atoms, for one sample (codes only).

    Step ``t = 1..l0``: correlation ``g = r D^T`` (``2 n_atoms d``; gathered on the support
    it is the descent direction), argmax (ignored), the direction in signal space
    ``g_S D_S`` (``2 t d``), whose squared norm gives the exact line-search step; the
    residual and code updates are axpys (ignored). Summed: ``2 n_atoms d l0 + d l0 (l0 + 1)``.
    Not counted: with ``nonneg=True``, a step whose clamp at 0 bites (in any row of the
    chunk) decodes the clamped move once more (``2 t d``) for its segment line search, so
    the worst case is ``2 n_atoms d l0 + 2 d l0 (l0 + 1)``. ``l0`` is in ``[1, n_atoms]``.
    """
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    l0 = _int("l0", l0, 1, n_atoms)
    return 2 * n_atoms * d * l0 + d * l0 * (l0 + 1)


def matching_pursuit_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``l0`` matching-pursuit steps for one sample: ``l0 (2 n_atoms d + 2 d)``.

    Step: correlation ``r D^T`` (``2 n_atoms d``), argmax (ignored), code update (one
    entry, ignored), residual ``r -= c_j d_j`` (``2 d``, the rank-one update with the atom).
    An atom may be chosen twice, so ``l0`` (the number of steps) is any integer ``>= 1``.
    """
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    l0 = _int("l0", l0, 1)
    return l0 * (2 * n_atoms * d + 2 * d)


def ito_flops(
    solver: str, n_atoms: int, d: int, *, n_iter: int | None = None, l0: int | None = None
) -> int:
    """FLOPs for one sample's codes from the ITO solver named ``solver`` (one of ``SOLVERS``).

    ista and fista take ``n_iter`` (the iterations run: ``ITOResult.n_iter``, the most over
    chunks, so an upper bound; at most ``max_iter``) and return ``n_iter`` times the
    per-iteration count; omp, gradient_pursuit and matching_pursuit take ``l0`` and return
    their totals. Not included: the one-off cost per call (``ito_setup_flops``) and the
    reconstruction ``x_hat = c D + bias`` that every ``ITOResult`` carries (``2 n_atoms d``,
    dense).
    """
    _choice("solver", solver, SOLVERS)
    if solver in ITERATIVE_SOLVERS:
        if l0 is not None:
            raise ValueError(f"l0 is not used by solver {solver!r}: pass n_iter, not l0")
        n_iter = _int("n_iter", n_iter, 1)
        return n_iter * ista_iter_flops(n_atoms, d)
    if n_iter is not None:
        raise ValueError(f"n_iter is not used by solver {solver!r}: pass l0, not n_iter")
    if l0 is None:
        raise ValueError(f"l0 must be given for solver {solver!r} (an integer >= 1)")
    pursuit = {
        "omp": omp_flops,
        "gradient_pursuit": gradient_pursuit_flops,
        "matching_pursuit": matching_pursuit_flops,
    }[solver]
    return pursuit(n_atoms, d, l0)


def ito_setup_flops(solver: str, n_atoms: int, d: int) -> int:
    """FLOPs a solver call spends once on its dictionary, whatever the batch size.

    ista, fista: the step size ``1 / ||D||_2^2``, the largest eigenvalue of the smaller Gram
    matrix (``m = min(n_atoms, d)``): ``2 n_atoms d m`` to form it, ``4 m^3 / 3`` for the
    symmetric eigensolve, rounded. omp, gradient_pursuit, matching_pursuit: 0 (they only
    take the atoms' norms, an elementwise pass).
    """
    _choice("solver", solver, SOLVERS)
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    if solver in ITERATIVE_SOLVERS:
        m = min(n_atoms, d)
        return 2 * n_atoms * d * m + _third(4 * m**3)
    return 0


# -- dictionary learning (saelib.coding.sparse_coding) ---------------------------------------------
def dictionary_update_flops(
    n_atoms: int, d: int, n_samples: int, method: str = "lstsq", *, grad_steps: int = 10
) -> int:
    """FLOPs of one dictionary update from codes ``C [n_samples, n_atoms]`` (stored dense).

    Both methods form ``C^T C`` (``2 n_samples n_atoms^2``) and ``C^T X``
    (``2 n_samples n_atoms d``). lstsq then solves ``(C^T C + lam I) D = C^T X`` by LU
    with ``d`` right-hand sides (``2 n_atoms^3 / 3 + 2 n_atoms^2 d``); gradient takes the
    step size from the eigenvalues of ``C^T C`` (``4 n_atoms^3 / 3``) and ``grad_steps``
    steps ``D -= (C^T C D - C^T X) / L`` (``2 n_atoms^2 d`` each). Cubic terms rounded.
    Ignored: the ridge, renormalising the atoms.
    """
    n_atoms, d = _int("n_atoms", n_atoms, 1), _int("d", d, 1)
    n_samples = _int("n_samples", n_samples, 1)
    _choice("method", method, DICT_UPDATES)
    grad_steps = _int("grad_steps", grad_steps, 1)
    normal_equations = 2 * n_samples * n_atoms**2 + 2 * n_samples * n_atoms * d
    if method == "gradient":
        return normal_equations + _third(4 * n_atoms**3) + grad_steps * 2 * n_atoms**2 * d
    return normal_equations + _third(2 * n_atoms**3) + 2 * n_atoms**2 * d


def sparse_coding_flops(
    n_atoms: int,
    d: int,
    n_samples: int,
    n_outer: int,
    solver: str,
    *,
    n_iter: int | None = None,
    l0: int | None = None,
    dict_update: str = "lstsq",
    grad_steps: int = 10,
) -> int:
    """FLOPs of ``sparse_coding.fit_dictionary`` with ``n_outer`` (its ``n_iter``) rounds.

    A code step is one solver call on all samples: ``ito_setup_flops + n_samples *
    (ito_flops + 2 n_atoms d)`` (codes, and the ``x_hat`` the solver returns). An objective
    evaluation costs ``n_samples * 2 n_atoms d`` (``C D``). fit_dictionary runs one code
    step and one objective first, then per round a dictionary update
    (``dictionary_update_flops``), a code step, two objectives (keep the better of old and
    new codes per sample) and one for the history. For ista and fista, ``n_iter`` is the
    iterations per code step (``solver_max_iter`` for an upper bound).
    """
    n_samples = _int("n_samples", n_samples, 1)
    n_outer = _int("n_outer", n_outer, 1)
    per_sample = ito_flops(solver, n_atoms, d, n_iter=n_iter, l0=l0) + 2 * n_atoms * d
    code_step = ito_setup_flops(solver, n_atoms, d) + n_samples * per_sample
    objective = n_samples * 2 * n_atoms * d
    update = dictionary_update_flops(n_atoms, d, n_samples, dict_update, grad_steps=grad_steps)
    return code_step + objective + n_outer * (update + code_step + 3 * objective)


# -- encoder-only fits (saelib.coding.amortisation) ------------------------------------------------
def encoder_fit_flops(cfg: SAEConfig, n_steps: int, batch_size: int, setting: str) -> int:
    """FLOPs of ``amortisation.fit_encoder``: ``n_steps`` steps on ``batch_size`` samples.

    Per sample, the encoder's matmuls cost 3x forward (forward, gradient for the weight and
    for the input), except those applied to ``x - b_dec``, which cost 2x (the input is data
    and ``b_dec`` is frozen: no input gradient). ``known_dictionary`` (the SAE's own loss)
    adds the dense decode through the frozen dictionary at 2x (forward and the gradient with
    respect to ``f``), twice for Gated (its auxiliary reconstruction); ``known_codes`` never
    decodes. Ignored: the losses, elementwise work, the Adam update.
    """
    cfg = _cfg(cfg)
    n_steps, batch_size = _int("n_steps", n_steps, 1), _int("batch_size", batch_size, 1)
    _choice("setting", setting, ("known_dictionary", "known_codes"))
    matmuls = _encoder_matmuls(cfg)
    n_input_products = 2 if cfg.architecture == "gated" else 1
    per_sample = sum(
        (2 if i < n_input_products else 3) * 2 * fan_in * fan_out
        for i, (fan_in, fan_out) in enumerate(matmuls)
    )
    if setting == "known_dictionary":
        per_sample += (4 if cfg.architecture == "gated" else 2) * sae_decode_flops(cfg)
    return n_steps * batch_size * per_sample
