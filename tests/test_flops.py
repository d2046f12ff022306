"""SAE FLOP accounting: hand-computed cases, torch's own counter, monotonicity, validation."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saelib import flops
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE, BATCH = 8, 24, 16

CONFIGS = {  # name -> SAEConfig keywords; every architecture and the flags that change counts
    "relu": {},
    "relu_tied": {"tied": True},
    "relu_no_bdec": {"apply_b_dec_to_input": False},
    "topk": {"architecture": "topk", "k": 3},
    "batchtopk": {"architecture": "batchtopk", "k": 3},
    "matryoshka": {"architecture": "matryoshka", "k": 3, "matryoshka_widths": (4, 10, 24)},
    "jumprelu": {"architecture": "jumprelu"},
    "gated": {"architecture": "gated"},
    "gated_no_bdec": {"architecture": "gated", "apply_b_dec_to_input": False},
    "mlp": {"architecture": "mlp", "mlp_hidden": (5, 7)},
    "mlp_topk": {"architecture": "mlp", "mlp_hidden": (6,), "mlp_output": "topk", "k": 4},
    "mlp_no_bdec": {"architecture": "mlp", "mlp_hidden": (5,), "apply_b_dec_to_input": False},
    "lista": {"architecture": "lista", "lista_steps": 2},
    # every sample takes all its steps (no early stop), so the count is exact
    "mp": {
        "architecture": "mp",
        "mp_steps": 3,
        "mp_residual_threshold": 0.0,
        "mp_stop_on_repeat": False,
    },
    "lista_no_bdec": {"architecture": "lista", "lista_steps": 1, "apply_b_dec_to_input": False},
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
        ("lista", 384 + 2 * (384 + 384)),  # W_enc, then per step z @ W_dec and r @ W_t
        ("mp", 3 * 384),  # per pursuit step r @ W_dec.T
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
    # matryoshka: batchtopk's step plus the inner prefixes up to width 10, 3x forward
    assert flops.sae_train_step_flops(config("matryoshka"), 1) == step + 3 * 2 * 10 * 8
    # without b_dec subtracted the input is data: no input gradient either
    assert flops.sae_train_step_flops(config("relu_no_bdec"), 1) == step
    assert flops.training_flops(relu, n_steps=10, batch_size=16) == 10 * 16 * step


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


# -- monotonicity -------------------------------------------------------------------------------
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
        (lambda: flops.sae_decode_flops(CFG, l0=7), r"l0 must be a number in \[0, 6\]"),
        (lambda: flops.sae_decode_flops(CFG, l0=-1), r"l0 must be a number in \[0, 6\]"),
        (lambda: flops.sae_forward_flops(CFG, l0=float("nan")), "l0 must be a number"),
        (lambda: flops.sae_train_step_flops(CFG, 0), "batch_size must be an integer >= 1"),
        (lambda: flops.training_flops(CFG, 0, 8), "n_steps must be an integer >= 1"),
    ],
)
def test_invalid_inputs_raise_with_the_parameter_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
