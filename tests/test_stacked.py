"""Stacked training: each member ends where the library's Trainer takes it alone."""

from dataclasses import replace

import pytest
import torch

from saelib import losses
from saelib.data import TensorBatches
from saelib.saes import SAEConfig, make_sae
from saelib.stacked import stacked_orthogonality, train_stacked
from saelib.training import TrainConfig, Trainer

X = torch.randn(2048, 3, generator=torch.Generator().manual_seed(0)).abs()
# members differ in seed, lr, sparsity and orthogonality coefficients and power
SETTINGS = [
    (1e-3, 0.1, 0.0, 1.0),
    (3e-3, 0.3, 0.3, 1.0),
    (1e-2, 0.03, 0.1, 2.0),
    (3e-3, 0.1, 0.0, 1.0),
]


def configs(arch: str, **kw) -> tuple[list[SAEConfig], list[TrainConfig]]:
    saes = [SAEConfig(d_in=3, d_sae=5, architecture=arch, seed=s, **kw) for s in range(4)]
    trains = [
        TrainConfig(n_steps=120, lr=lr, lr_warmup_steps=10, lr_decay_steps=30,
                    sparsity_coeff=0.0 if arch == "topk" else c, sparsity_warmup_steps=20,
                    orthogonality_coeff=oc, orthogonality_power=p, log_every=40, progress=False)
        for lr, c, oc, p in SETTINGS
    ]  # fmt: skip
    return saes, trains


@pytest.mark.parametrize(
    "arch, kw",
    [
        ("relu", {}),
        ("relu", {"tied": True}),
        ("relu", {"sparsity_penalty": "l1"}),
        ("topk", {"k": 2}),
    ],
)
def test_members_match_the_trainer(arch, kw):
    sae_cfgs, train_cfgs = configs(arch, **kw)
    alone = []
    for c, t in zip(sae_cfgs, train_cfgs, strict=True):
        sae = make_sae(c)
        alone.append((sae, Trainer(sae, t).fit(TensorBatches(X, 64, seed=c.seed))))
    stacked = [make_sae(c) for c in sae_cfgs]
    logs = train_stacked(stacked, train_cfgs, [TensorBatches(X, 64, seed=c.seed) for c in sae_cfgs])
    for (sae, log), other, other_log in zip(alone, stacked, logs, strict=True):
        for name, value in sae.state_dict().items():
            torch.testing.assert_close(
                other.state_dict()[name], value, atol=2e-5, rtol=1e-4
            )  # rounding only
        assert [r.keys() for r in other_log] == [r.keys() for r in log]
        for mine, theirs in zip(other_log, log, strict=True):
            assert mine == pytest.approx(theirs, rel=1e-4, abs=2e-5)


def test_orthogonality_matches_the_unstacked_penalty():
    W = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    powers = torch.tensor([1.0, 2.0, 3.0])
    stacked_orthogonality(W, powers).sum().backward()
    for i in range(3):
        w = W.detach()[i].clone().requires_grad_(True)
        value = losses.orthogonality_penalty(w, float(powers[i]))
        value.backward()
        assert stacked_orthogonality(
            W.detach()[i : i + 1], powers[i : i + 1]
        ).item() == pytest.approx(value.item())
        torch.testing.assert_close(W.grad[i], w.grad)


def test_refuses_what_it_does_not_implement():
    sae_cfgs, train_cfgs = configs("relu")
    saes = [make_sae(c) for c in sae_cfgs]
    batches = [TensorBatches(X, 64) for _ in saes]
    with pytest.raises(ValueError, match="n_steps"):
        train_stacked(
            saes, [train_cfgs[0], replace(train_cfgs[1], n_steps=7), *train_cfgs[2:]], batches
        )
    with pytest.raises(ValueError, match="aux_k"):
        train_stacked(saes, [replace(t, aux_k=2) for t in train_cfgs], batches)
    with pytest.raises(ValueError, match="d_sae"):
        train_stacked([*saes[:3], make_sae(SAEConfig(d_in=3, d_sae=6))], train_cfgs, batches)
    with pytest.raises(ValueError, match="gated"):
        train_stacked(
            [make_sae(SAEConfig(d_in=3, d_sae=5, architecture="gated"))],
            train_cfgs[:1],
            batches[:1],
        )
    with pytest.raises(ValueError, match="one TrainConfig and one batch source"):
        train_stacked(saes, train_cfgs, batches[:2])


def test_non_finite_loss_names_the_member_and_step():
    sae_cfgs, train_cfgs = configs("relu")
    poisoned = X.clone()
    poisoned[5, 1] = float("nan")

    def stream(x):
        while True:
            yield x[:64]

    batches = [TensorBatches(X, 64) for _ in sae_cfgs[:3]] + [stream(poisoned)]
    with pytest.raises(
        FloatingPointError, match=r"step 0 of n_steps=120: the loss of member\(s\) \[3\]"
    ):
        train_stacked([make_sae(c) for c in sae_cfgs], train_cfgs, batches)
