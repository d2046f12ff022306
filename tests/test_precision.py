"""Mixed precision (``TrainConfig.precision="bfloat16"``) and the reused workspace.

On the sparse TopK path, bf16 only chooses the active latents: their values, the loss
and every gradient must equal an fp32 computation with that choice. Dense SAEs run
under autocast: their gradients match fp32 within bf16's rounding. The workspace must
not change a single bit of training. Training in bf16 recovers a planted dictionary
as fp32 does.
"""

import pytest
import torch

from saelib import losses
from saelib.data import TensorBatches
from saelib.evaluation import evaluate
from saelib.saes import SAEConfig, make_sae, sparse
from saelib.saes.base import _Affine
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE, K, BATCH = 32, 96, 4, 64


def perturbed(arch, seed=0, **kw):
    sae = make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K, seed=seed, **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero biases, so a bias bug cannot hide
        for p in sae.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return sae.train()


def bf16_choice(sae, x):
    """Entries chosen from the bf16 product, as the sparse path does under autocast."""
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else 0
    low = torch.addmm(
        sae.b_enc.bfloat16(), (x - b_dec).bfloat16(), sae.W_enc.detach().bfloat16()
    ).detach()
    return low, sae._entries(low)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
@pytest.mark.parametrize("kw", [{}, {"apply_b_dec_to_input": False}, {"tied": True}])
def test_bf16_chooses_fp32_computes(arch, kw):
    if arch == "matryoshka":
        kw = {**kw, "matryoshka_widths": (16, 48, D_SAE)}
    sae = perturbed(arch, **kw)
    x = torch.randn(
        16 * BATCH, D_IN, generator=torch.Generator().manual_seed(2)
    )  # enough rows for a near-tie that bf16 decides
    with torch.autocast("cpu", torch.bfloat16):
        total, _, out = sae.sparse_loss(x)
    got = torch.autograd.grad(total, list(sae.parameters()))

    low, (rows, cols) = bf16_choice(sae, x)
    assert torch.equal(out.codes.rows, rows) and torch.equal(out.codes.cols, cols)
    # the fp32 reference with the same choice: dense codes through ordinary autograd
    pre = sae.linear_pre_acts(x)
    mask = torch.zeros_like(pre, dtype=torch.bool).index_put_((rows, cols), torch.tensor(True))
    f = (pre * mask).relu()
    ref_out = sae.forward(x)._replace(f=f, x_hat=sae.decode(f))
    ref_total = losses.mse(x, ref_out.x_hat)
    if arch == "matryoshka":
        ref_total = ref_total + sae.inner_mse(x, ref_out)
    want = torch.autograd.grad(ref_total, list(sae.parameters()), allow_unused=True)

    assert out.codes.vals.dtype == torch.float32 and total.dtype == torch.float32
    torch.testing.assert_close(out.codes.vals, f[rows, cols], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=1e-4, atol=1e-5)
    # the choice above is bf16's, not fp32's: on this batch the two differ
    assert not torch.equal(torch.stack(sae._entries(pre.detach())), torch.stack([rows, cols]))


@pytest.mark.parametrize("n_dead", [6, D_SAE])  # the entries branch and the dead-columns one
def test_aux_k_under_bf16_has_fp32_values(n_dead):
    sae = perturbed("topk")
    # seeded: bf16 rounding makes ties, and topk breaks them by position, which differs
    # between the dead columns alone and the masked full row; these rows have none
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(3))
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    k_aux = 3
    with torch.autocast("cpu", torch.bfloat16):
        out = sae.sparse_forward(x)
        residual = (x - out.x_hat).detach()
        aux = sae.aux_k_loss(x, residual, out, dead, k_aux)
    assert aux.dtype == torch.float32
    got = torch.autograd.grad(aux, [sae.W_enc, sae.b_enc, sae.W_dec])

    low, _ = bf16_choice(sae, x)
    pre = sae.linear_pre_acts(x)
    chosen = low.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
    codes = torch.zeros_like(pre).scatter(-1, chosen, pre.gather(-1, chosen).relu())
    ref = losses.mse(residual, codes @ sae.W_dec)
    want = torch.autograd.grad(ref, [sae.W_enc, sae.b_enc, sae.W_dec])
    torch.testing.assert_close(aux, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_affine_under_autocast_runs_in_bf16_with_fp32_gradients():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(BATCH, D_IN, generator=g)
    W = torch.randn(D_IN, D_SAE, generator=g, requires_grad=True)
    b = torch.randn(D_SAE, generator=g, requires_grad=True)
    b_dec = torch.randn(D_IN, generator=g, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        pre = _Affine.apply(x, b_dec, W, b)
    assert pre.dtype == torch.bfloat16
    got = torch.autograd.grad(pre.float().square().sum(), [W, b, b_dec])
    ref = torch.addmm(b, x - b_dec, W)
    want = torch.autograd.grad(ref.square().sum(), [W, b, b_dec])
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        # bf16 keeps 8 bits of mantissa: relative error a few 1e-3 per product
        assert float((g - w).norm() / w.norm()) < 2e-2


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka", "relu"])
def test_workspace_leaves_training_bit_identical(arch):
    kw = {"k": None} if arch == "relu" else {"k": K}
    if arch == "matryoshka":
        kw["matryoshka_widths"] = (16, 48, D_SAE)
    data = torch.randn(8 * BATCH, D_IN, generator=torch.Generator().manual_seed(5))
    weights = []
    for use_workspace in (True, False):
        sae = make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, **kw))
        cfg = TrainConfig(
            n_steps=12, lr=1e-2, aux_k=8, dead_after_tokens=BATCH, progress=False,
            sparsity_coeff=0.1 if arch == "relu" else 0.0,
        )  # fmt: skip
        trainer = Trainer(sae, cfg)
        if not use_workspace:
            trainer.workspace = None
        trainer.fit(TensorBatches(data, batch_size=BATCH))
        weights.append({k: v.clone() for k, v in sae.state_dict().items()})
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_workspace_reuses_one_buffer():
    ws = sparse.Workspace()
    a = ws.get("pre", (4, 5), torch.float32, torch.device("cpu"))
    assert ws.get("pre", (4, 5), torch.float32, torch.device("cpu")).data_ptr() == a.data_ptr()
    assert ws.get("pre", (4, 5), torch.bfloat16, torch.device("cpu")).dtype == torch.bfloat16
    assert ws.get("pre", (3, 5), torch.bfloat16, torch.device("cpu")).shape == (3, 5)


def test_precision_is_validated_and_part_of_the_run(tmp_path):
    with pytest.raises(ValueError, match="TrainConfig.precision.*float16"):
        TrainConfig(n_steps=1, precision="float16")
    x = torch.randn(4 * BATCH, D_IN, generator=torch.Generator().manual_seed(6))
    data = TensorBatches(x, batch_size=BATCH)
    cfg = TrainConfig(n_steps=2, progress=False, checkpoint_dir=str(tmp_path / "run"))
    Trainer(make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=K)), cfg).fit(data)
    again = Trainer(
        make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=K)),
        TrainConfig(**{**cfg.__dict__, "n_steps": 4, "precision": "bfloat16"}),
    )
    with pytest.raises(ValueError, match="precision: 'float32' -> 'bfloat16'"):
        again.fit(data)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_bf16_training_recovers_like_fp32(planted, arch):
    """Three seeds each: bf16 passes test_recovery's bar (MMCS >= 0.9) on every seed, and
    its mean FVU is within 0.01 of fp32's (set before the run; fp32's seed spread here is
    a few 1e-3)."""
    train, test = planted
    scores = {}
    for precision in ("float32", "bfloat16"):
        runs = []
        for seed in range(3):
            torch.manual_seed(seed)
            extra = {"k": 3} if arch == "topk" else {}
            sae = make_sae(SAEConfig(d_in=24, d_sae=48, architecture=arch, seed=seed, **extra))
            cfg = TrainConfig(
                n_steps=3000, lr=3e-3, sparsity_coeff=0.3 if arch == "relu" else 0.0,
                precision=precision, progress=False,
            )  # fmt: skip
            Trainer(sae, cfg).fit(TensorBatches(train.x, batch_size=256, seed=seed))
            runs.append(evaluate(sae, test.x, true_dictionary=test.dictionary))
        scores[precision] = runs
    print({p: [(round(r["mmcs"], 4), round(r["fvu"], 4)) for r in rs] for p, rs in scores.items()})
    assert all(r["mmcs"] >= 0.9 for r in scores["bfloat16"]), scores
    mean_fvu = {p: sum(r["fvu"] for r in runs) / 3 for p, runs in scores.items()}
    assert abs(mean_fvu["bfloat16"] - mean_fvu["float32"]) < 0.01, scores
