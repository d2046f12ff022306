"""fit_together: several SAEs on one stream of batches equal their own fits, and resume."""

import pytest
import torch

from saelib.data import TensorBatches
from saelib.one_pass import fit_together
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

SWEEP = [
    SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=1),
    SAEConfig(d_in=8, d_sae=32, architecture="batchtopk", k=3, seed=2),
    SAEConfig(d_in=8, d_sae=24, architecture="relu", seed=3),
]


def _data():
    return torch.randn(256, 8, generator=torch.Generator().manual_seed(0)) + 1.0


def _trainers(tmp_path=None, n_steps=12):
    out = []
    for i, cfg in enumerate(SWEEP):
        directory = None if tmp_path is None else str(tmp_path / f"sae{i}")
        train = TrainConfig(
            n_steps=n_steps,
            lr=1e-2,
            sparsity_coeff=1e-2 * (cfg.architecture == "relu"),
            log_every=4,
            progress=False,
            checkpoint_dir=directory,
            checkpoint_every=5 if directory else 0,
            init_b_dec="mean",
        )
        out.append(Trainer(make_sae(cfg), train))
    return out


def test_one_pass_equals_separate_fits(one_thread):
    together = _trainers()
    histories = fit_together(together, TensorBatches(_data(), 32, seed=4), progress=False)
    for t, history in zip(together, histories, strict=True):
        alone = Trainer(make_sae(t.sae.cfg), t.cfg)
        assert alone.fit(TensorBatches(_data(), 32, seed=4)) == history
        for key, value in alone.sae.state_dict().items():
            torch.testing.assert_close(t.sae.state_dict()[key], value, rtol=0, atol=0)
        assert torch.equal(alone.tokens_since_fired, t.tokens_since_fired)


def test_interrupted_sweep_resumes_to_the_same_weights(tmp_path, one_thread):
    straight = _trainers()
    fit_together(straight, TensorBatches(_data(), 32, seed=4), progress=False)

    class Stop(Exception):
        pass

    def stops_at_7(batches):
        for i, x in enumerate(batches):
            if i == 7:
                raise Stop
            yield x

    with pytest.raises(Stop):
        fit_together(_trainers(tmp_path), stops_at_7(TensorBatches(_data(), 32, seed=4)))
    resumed = _trainers(tmp_path)
    fit_together(resumed, TensorBatches(_data(), 32, seed=4), progress=False)
    for a, b in zip(resumed, straight, strict=True):
        assert a.restored_from is not None and a.step == 12
        for key, value in b.sae.state_dict().items():
            torch.testing.assert_close(a.sae.state_dict()[key], value, rtol=0, atol=0)


def test_sweep_errors_name_the_problem(tmp_path):
    a, b = _trainers()[:2]
    b2 = Trainer(make_sae(SWEEP[1]), TrainConfig(n_steps=3, progress=False))
    with pytest.raises(ValueError, match=r"share n_steps and d_in .* n_steps \[3, 12\]"):
        fit_together([a, b2], TensorBatches(_data(), 32))
    with pytest.raises(ValueError, match="at least one Trainer"):
        fit_together([], TensorBatches(_data(), 32))
    with pytest.raises(ValueError, match="batches ran out after 2 of n_steps=12"):
        fit_together([a, b], [_data()[:32]] * 2, progress=False)
