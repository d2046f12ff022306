"""FLOP accounting: hand-computed cases, torch's own counter, monotonicity, validation."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saelib import flops
from saelib.coding import ito, sparse_coding
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE, BATCH = 8, 24, 16

CONFIGS = {  # name -> SAEConfig keywords; every architecture and the flags that change counts
    "relu": {},
    "relu_tied": {"tied": True},
    "relu_no_bdec": {"apply_b_dec_to_input": False},
    "topk": {"architecture": "topk", "k": 3},
    "batchtopk": {"architecture": "batchtopk", "k": 3},
    "jumprelu": {"architecture": "jumprelu"},
    "gated": {"architecture": "gated"},
    "gated_no_bdec": {"architecture": "gated", "apply_b_dec_to_input": False},
    "mlp": {"architecture": "mlp", "mlp_hidden": (5, 7)},
    "mlp_topk": {"architecture": "mlp", "mlp_hidden": (6,), "mlp_output": "topk", "k": 4},
    "mlp_no_bdec": {"architecture": "mlp", "mlp_hidden": (5,), "apply_b_dec_to_input": False},
}


def config(name: str) -> SAEConfig:
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, **CONFIGS[name])


def counted(fn) -> int:
    """FLOPs that torch's counter sees while ``fn`` runs (matmuls, 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# -- hand-computed ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("relu", 2 * 8 * 24),
        ("relu_tied", 384),
        ("topk", 384),
        ("batchtopk", 384),
        ("jumprelu", 384),
        ("gated", 2 * 384),  # gate and magnitude paths
        ("mlp", 2 * (8 * 5 + 5 * 7 + 7 * 24)),  # 486
        ("mlp_topk", 2 * (8 * 6 + 6 * 24)),  # 384
    ],
)
def test_encode_hand_computed(name, expected):
    assert flops.sae_encode_flops(config(name)) == expected


def test_decode_and_forward_hand_computed():
    cfg = config("relu")
    assert flops.sae_decode_flops(cfg) == 2 * 24 * 8
    assert flops.sae_decode_flops(cfg, l0=3) == 48
    assert flops.sae_decode_flops(cfg, l0=2.5) == 40.0
    assert flops.sae_decode_flops(cfg, l0=0) == 0
    assert flops.sae_forward_flops(cfg) == 768
    assert flops.sae_forward_flops(cfg, l0=3) == 384 + 48
    assert flops.sae_forward_flops(config("gated")) == 768 + 384


def test_train_step_hand_computed():
    relu, gated = config("relu"), config("gated")
    # relu: encoder 384 + decoder 384 forward, 3x backward, less the encoder's input
    # gradient (the affine map skips it: b_dec's gradient is a column sum)
    step = 3 * 768 - 384
    assert flops.sae_train_step_flops(relu, 16) == 16 * step
    assert flops.sae_train_step_flops(relu, 16, aux_k=True) == 16 * (step + 3 * 384)
    orth = 2 * 24**2 * 8
    assert flops.sae_train_step_flops(relu, 16, orthogonality=True) == 16 * step + orth
    # gated: 3 x (two encoder products + decoder) + frozen-decoder aux at 2x
    assert flops.sae_train_step_flops(gated, 1) == 3 * (768 + 384) + 2 * 384
    # without b_dec subtracted the input is data: no input gradient either
    assert flops.sae_train_step_flops(config("relu_no_bdec"), 1) == step
    assert flops.training_flops(relu, n_steps=10, batch_size=16) == 10 * 16 * step


def test_solvers_hand_computed():
    n, d = 10, 5
    assert flops.ista_iter_flops(n, d) == flops.fista_iter_flops(n, d) == 4 * 10 * 5
    # omp: step t: correlation 2nd = 100, Gram column 2(t-1)d, <x, d_j> 2d, residual 2td,
    # triangular solve (t-1)^2, refit 2t^2
    assert flops.omp_flops(n, d, 1) == (100 + 0 + 10 + 10) + (0 + 2)
    assert flops.omp_flops(n, d, 2) == 122 + (100 + 10 + 10 + 20) + (1 + 8)
    assert flops.gradient_pursuit_flops(n, d, 2) == (100 + 10) + (100 + 20)
    assert flops.matching_pursuit_flops(n, d, 2) == 2 * (100 + 10)
    assert flops.ito_setup_flops("ista", n, d) == 2 * 10 * 5 * 5 + 167  # 4 * 125 / 3
    assert flops.ito_setup_flops("fista", n, d) == 667
    for solver in flops.PURSUIT_SOLVERS:
        assert flops.ito_setup_flops(solver, n, d) == 0


def omp_not_matmul(l0: int, d: int) -> int:
    """OMP's terms that torch does not count as matmuls: <x, d_j> and the solves."""
    return sum(2 * d + (t - 1) ** 2 + 2 * t**2 for t in range(1, l0 + 1))


@pytest.mark.parametrize("l0", [1, 2, 3, 7, 20])
def test_omp_closed_form_matches_step_by_step_sum(l0):
    n, d = 50, 30
    # correlation, Gram column, <x, d_j>, residual; triangular solve, refit
    steps = [
        2 * n * d + 2 * (t - 1) * d + 2 * d + 2 * t * d + (t - 1) ** 2 + 2 * t**2
        for t in range(1, l0 + 1)
    ]
    assert flops.omp_flops(n, d, l0) == sum(steps)


def test_ito_dispatcher_matches_each_solver():
    n, d = 12, 6
    assert flops.ito_flops("ista", n, d, n_iter=7) == 7 * flops.ista_iter_flops(n, d)
    assert flops.ito_flops("fista", n, d, n_iter=7) == 7 * flops.fista_iter_flops(n, d)
    assert flops.ito_flops("omp", n, d, l0=4) == flops.omp_flops(n, d, 4)
    assert flops.ito_flops("gradient_pursuit", n, d, l0=4) == flops.gradient_pursuit_flops(n, d, 4)
    assert flops.ito_flops("matching_pursuit", n, d, l0=4) == flops.matching_pursuit_flops(n, d, 4)


def test_dictionary_update_and_sparse_coding_hand_computed():
    n, d, N = 10, 5, 20
    normal = 2 * N * n**2 + 2 * N * n * d  # C^T C, C^T X
    assert flops.dictionary_update_flops(n, d, N) == normal + 667 + 2 * n**2 * d == 7667
    gradient = normal + 1333 + 3 * 2 * n**2 * d  # eigenvalues 4 * 1000 / 3, three steps
    assert flops.dictionary_update_flops(n, d, N, "gradient", grad_steps=3) == gradient
    code_step, objective = N * (271 + 100), N * 100  # omp codes + x_hat; C @ D
    total = code_step + objective + 3 * (7667 + code_step + 3 * objective)
    assert flops.sparse_coding_flops(n, d, N, 3, "omp", l0=2) == total


# -- against torch's own counter ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_and_forward_match_torch_counter(name):
    cfg = config(name)
    sae = make_sae(cfg)
    x = torch.randn(BATCH, D_IN)
    with torch.no_grad():
        assert counted(lambda: sae.encode(x)) == BATCH * flops.sae_encode_flops(cfg)
        assert counted(lambda: sae(x)) == BATCH * flops.sae_forward_flops(cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("extras", [{}, {"aux_k": 4, "orthogonality_coeff": 0.1}])
def test_train_step_matches_torch_counter(name, extras):
    """A whole Trainer step (forward, backward, projection, Adam) under the counter."""
    cfg = config(name)
    train_cfg = TrainConfig(n_steps=2, progress=False, sparse_topk=False, **extras)
    trainer = Trainer(make_sae(cfg), train_cfg)  # the dense twin: what the formula counts
    trainer.tokens_since_fired.fill_(trainer.cfg.dead_after_tokens)  # all dead: aux-k runs
    x = torch.randn(BATCH, D_IN)
    expected = flops.sae_train_step_flops(
        cfg, BATCH, aux_k="aux_k" in extras, orthogonality="orthogonality_coeff" in extras
    )
    assert counted(lambda: trainer.train_step(x)) == expected


def test_standard_rule_is_three_forwards_for_gated_without_aux():
    # both operands of each of gated's products need gradients: 3x forward, plus its
    # frozen-decoder auxiliary reconstruction at 2x
    cfg = config("gated")
    aux = 2 * flops.sae_decode_flops(cfg)
    assert flops.sae_train_step_flops(cfg, BATCH) == BATCH * (
        3 * flops.sae_forward_flops(cfg) + aux
    )


def test_ista_iteration_matches_torch_counter():
    """The per-iteration count of a reference ISTA step, (c D - x) D^T, on a batch."""
    n, d = 12, 7
    D, x, c = torch.randn(n, d), torch.randn(BATCH, d), torch.randn(BATCH, n)
    assert counted(lambda: (c @ D - x) @ D.T) == BATCH * flops.ista_iter_flops(n, d)


def problem(n_atoms=12, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_atoms, d, generator=g, dtype=torch.float64)
    return D / D.norm(dim=1, keepdim=True), torch.randn(BATCH, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("solver", ["ista", "fista"])
def test_ista_fista_match_torch_counter_on_saelib_ito(solver):
    D, x = problem()
    n, d = D.shape
    res = []
    total = counted(lambda: res.append(ito.SOLVERS[solver](D, x, 0.05, max_iter=6, tol=0.0)))
    setup_matmul = 2 * n * d * min(n, d)  # the Gram matrix; its eigvalsh is not a matmul
    per_sample = flops.ito_flops(solver, n, d, n_iter=res[0].n_iter) + 2 * n * d  # + x_hat
    assert total == setup_matmul + BATCH * per_sample
    assert flops.ito_setup_flops(solver, n, d) > setup_matmul


@pytest.mark.parametrize("l0", [1, 3, 5])
def test_pursuits_match_torch_counter_on_saelib_ito(l0):
    D, x = problem()
    n, d = D.shape
    x_hat = 2 * n * d
    omp = counted(lambda: ito.omp(D, x, l0))
    assert omp == BATCH * (flops.omp_flops(n, d, l0) - omp_not_matmul(l0, d) + x_hat)
    gp = counted(lambda: ito.gradient_pursuit(D, x, l0, nonneg=False))
    assert gp == BATCH * (flops.gradient_pursuit_flops(n, d, l0) + x_hat)
    mp = counted(lambda: ito.matching_pursuit(D, x, l0))  # its rank-one update is elementwise
    assert mp == BATCH * (flops.matching_pursuit_flops(n, d, l0) - l0 * 2 * d + x_hat)
    # non-negative gradient pursuit: one more product on the steps where the clamp bites
    gp_nonneg = counted(lambda: ito.gradient_pursuit(D, x, l0, nonneg=True))
    base = BATCH * (flops.gradient_pursuit_flops(n, d, l0) + x_hat)
    assert base <= gp_nonneg <= base + BATCH * d * l0 * (l0 + 1)


@pytest.mark.parametrize(
    "solver, dict_update", [("omp", "lstsq"), ("matching_pursuit", "gradient"), ("ista", "lstsq")]
)
def test_sparse_coding_matches_torch_counter_on_fit_dictionary(solver, dict_update):
    n, d, N, n_outer, l0, n_iter, grad_steps = 8, 6, 40, 2, 2, 3, 4
    x = torch.randn(N, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = {"l1": 0.05, "solver_max_iter": n_iter, "solver_tol": 1e-300}
    kw = kw if solver == "ista" else {"l0": l0}
    cfg = sparse_coding.SparseCodingConfig(
        n_atoms=n,
        solver=solver,
        n_iter=n_outer,
        dict_update=dict_update,
        grad_steps=grad_steps,
        **kw,
    )
    total = counted(lambda: sparse_coding.fit_dictionary(x, cfg))
    solver_kw = {"n_iter": n_iter} if solver == "ista" else {"l0": l0}
    expected = flops.sparse_coding_flops(
        n, d, N, n_outer, solver, dict_update=dict_update, grad_steps=grad_steps, **solver_kw
    )
    # subtract what torch does not count as a matmul: solves, eigensolves, MP's rank-one update
    code_steps = n_outer + 1
    if solver == "omp":
        expected -= code_steps * N * omp_not_matmul(l0, d)
    if solver == "matching_pursuit":
        expected -= code_steps * N * l0 * 2 * d
    if solver == "ista":
        expected -= code_steps * ((4 * min(n, d) ** 3 + 1) // 3)
    if dict_update == "lstsq":
        expected -= n_outer * ((2 * n**3 + 1) // 3 + 2 * n**2 * d)
    else:
        expected -= n_outer * ((4 * n**3 + 1) // 3)
    assert total == expected


# -- monotonicity -------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", flops.SOLVERS)
def test_solver_flops_grow_with_atoms_dimension_and_steps(solver):
    key = "n_iter" if solver in flops.ITERATIVE_SOLVERS else "l0"

    def cost(n, d, steps):
        return flops.ito_flops(solver, n, d, **{key: steps})

    assert cost(16, 8, 3) < cost(32, 8, 3) < cost(32, 16, 3) < cost(32, 16, 4)
    assert flops.sparse_coding_flops(16, 8, 10, 2, solver, **{key: 3}) < (
        flops.sparse_coding_flops(16, 8, 10, 3, solver, **{key: 3})
    )


def test_sae_flops_grow_with_width_depth_and_steps():
    small, wide = SAEConfig(d_in=8, d_sae=16), SAEConfig(d_in=8, d_sae=32)
    assert flops.sae_encode_flops(small) < flops.sae_encode_flops(wide)
    shallow = SAEConfig(d_in=8, d_sae=16, architecture="mlp", mlp_hidden=(32,))
    deep = SAEConfig(d_in=8, d_sae=16, architecture="mlp", mlp_hidden=(32, 32))
    assert flops.sae_encode_flops(small) < flops.sae_encode_flops(shallow)
    assert flops.sae_encode_flops(shallow) < flops.sae_encode_flops(deep)
    assert flops.sae_decode_flops(small, l0=2) < flops.sae_decode_flops(small, l0=3)
    assert flops.training_flops(small, 10, 8) < flops.training_flops(small, 11, 8)
    assert flops.training_flops(small, 10, 8) < flops.training_flops(small, 10, 9)


# -- validation ---------------------------------------------------------------------------------
CFG = SAEConfig(d_in=4, d_sae=6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flops.sae_encode_flops({"d_in": 4}), "cfg must be a saelib.saes.SAEConfig"),
        (lambda: flops.sae_decode_flops(CFG, l0=7), r"l0 must be a number in \[0, d_sae=6\]"),
        (lambda: flops.sae_decode_flops(CFG, l0=-1), r"l0 must be a number in \[0, d_sae=6\]"),
        (lambda: flops.sae_forward_flops(CFG, l0=float("nan")), "l0 must be a number"),
        (lambda: flops.sae_train_step_flops(CFG, 0), "batch_size must be an integer >= 1"),
        (lambda: flops.training_flops(CFG, 0, 8), "n_steps must be an integer >= 1"),
        (lambda: flops.ista_iter_flops(0, 5), "n_atoms must be an integer >= 1, got 0"),
        (lambda: flops.fista_iter_flops(4, 2.0), "d must be an integer >= 1, got 2.0"),
        (lambda: flops.ista_iter_flops(True, 5), "n_atoms must be an integer >= 1, got True"),
        (lambda: flops.omp_flops(10, 5, 6), r"l0 must be an integer in \[1, 5\], got 6"),
        (lambda: flops.omp_flops(10, 5, 0), r"l0 must be an integer in \[1, 5\]"),
        (lambda: flops.gradient_pursuit_flops(4, 8, 5), r"l0 must be an integer in \[1, 4\]"),
        (lambda: flops.matching_pursuit_flops(4, 8, 0), "l0 must be an integer >= 1"),
        (lambda: flops.ito_flops("lars", 4, 8, l0=2), r"solver must be one of \['ista', 'fista'"),
        (lambda: flops.ito_flops("ista", 4, 8), "n_iter must be an integer >= 1, got None"),
        (lambda: flops.ito_flops("fista", 4, 8, n_iter=3, l0=2), "l0 is not used by solver"),
        (lambda: flops.ito_flops("omp", 4, 8, n_iter=3, l0=2), "n_iter is not used by solver"),
        (lambda: flops.ito_flops("omp", 4, 8), "l0 must be given for solver 'omp'"),
        (lambda: flops.ito_setup_flops("svd", 4, 8), "solver must be one of"),
        (lambda: flops.dictionary_update_flops(4, 8, 0), "n_samples must be an integer >= 1"),
        (lambda: flops.dictionary_update_flops(4, 8, 2, "ksvd"), "method must be one of"),
        (lambda: flops.dictionary_update_flops(4, 8, 2, grad_steps=0), "grad_steps must be"),
        (lambda: flops.sparse_coding_flops(4, 8, 2, 0, "omp", l0=1), "n_outer must be an"),
        (lambda: flops.sparse_coding_flops(4, 8, 2, 1, "omp", l0=1, dict_update="x"), "method"),
    ],
)
def test_invalid_inputs_raise_with_the_parameter_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
