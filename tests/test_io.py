"""Persistence: saelib's format round trips bit for bit; SAELens's format matches its formulas."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from saelib.io import load_sae, save_sae
from saelib.saelens import load_saelens, save_saelens
from saelib.saes import SAE_CLASSES, GatedSAE, JumpReLUSAE, SAEConfig, make_sae

D_IN, D_SAE, K = 6, 10, 3  # d_in != d_sae, so a transposed matrix cannot pass a shape check
ALL = list(SAE_CLASSES)
SAELENS = ["relu", "topk", "jumprelu", "gated", "mp"]
SAELENS_NAME = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
                "mp": "matching_pursuit"}  # fmt: skip
LINEAR = ["relu", "topk", "batchtopk", "jumprelu", "gated"]


def trained_sae(arch: str, tied: bool = False, seed: int = 0):
    """An SAE whose every parameter and buffer is moved away from its initial value."""
    k = K if arch in ("topk", "batchtopk", "matryoshka") else None
    widths = (D_SAE // 4, D_SAE) if arch == "matryoshka" else ()
    cfg = SAEConfig(D_IN, D_SAE, arch, k=k, tied=tied, mlp_hidden=(8,), matryoshka_widths=widths,
                    metadata={"seed": seed})  # fmt: skip
    sae = make_sae(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        if arch == "jumprelu":  # thresholds of the order of the pre-activations
            sae.log_threshold.copy_(torch.empty(D_SAE).uniform_(-3, -0.5, generator=g))
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.37)
    return sae.eval()


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(64, D_IN, generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(a, b, x):
    for name, u, v in zip(("x_hat", "f", "pre_acts"), a(x)[:3], b(x)[:3], strict=True):
        assert torch.equal(u, v), name


# -- saelib's own format ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ALL)
def test_save_load_round_trip_is_bit_identical(tmp_path, arch):
    sae = trained_sae(arch)
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path).eval()
    assert type(loaded) is type(sae)
    assert loaded.cfg == sae.cfg and loaded.cfg.metadata == sae.cfg.metadata
    want, got = sae.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert_same_outputs(sae, loaded, inputs())


@pytest.mark.parametrize("arch", LINEAR)
def test_tied_round_trip(tmp_path, arch):
    sae = trained_sae(arch, tied=True)
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path).eval()
    assert loaded.cfg.tied and "W_enc" not in loaded.state_dict()
    assert_same_outputs(sae, loaded, inputs())


def test_saelib_files_are_json_and_safetensors(tmp_path):
    sae = trained_sae("gated")
    save_sae(sae, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format"] == "saelib.sae.v1" and config["saelib_version"]
    assert config["architecture"] == "gated" and config["d_in"] == D_IN
    with safe_open(tmp_path / "weights.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == sorted(sae.state_dict())
        assert f.get_slice("W_enc").get_shape() == [D_IN, D_SAE]
        assert f.get_slice("W_dec").get_shape() == [D_SAE, D_IN]


def test_load_sae_on_cpu_in_float64(tmp_path):
    sae = trained_sae("relu").double()
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path, device="cpu")
    assert loaded.W_dec.dtype == torch.float64
    assert_same_outputs(sae, loaded, inputs().double())


# -- SAELens format -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", SAELENS)
def test_saelens_round_trip_same_codes_and_reconstructions(tmp_path, arch):
    sae = trained_sae(arch)
    save_saelens(sae, tmp_path)
    loaded = load_saelens(tmp_path).eval()
    assert type(loaded) is type(sae) and loaded.cfg.k == sae.cfg.k
    x = inputs()
    f = sae.encode(x)
    assert (f != 0).any() and (f == 0).any()  # the test exercises the sparsifying step
    assert torch.equal(loaded.encode(x), f)
    assert torch.equal(loaded.decode(f), sae.decode(f))
    if arch == "jumprelu":
        assert torch.equal(loaded.threshold, sae.threshold)


def test_saelens_jumprelu_thresholds_come_back_bit_exact(tmp_path):
    """SAELens stores theta, saelib learns log theta; log(exp(lt)) rounds differently from lt
    for about 1 in 10^4 values: take such values, the hard case for an exact round trip."""
    lt = torch.empty(400_000).uniform_(-6, 1, generator=torch.Generator().manual_seed(0))
    hard = lt[lt.exp().log().exp() != lt.exp()][:D_SAE]
    assert len(hard) == D_SAE
    sae = trained_sae("jumprelu")
    with torch.no_grad():
        sae.log_threshold.copy_(hard)
    save_saelens(sae, tmp_path)
    assert torch.equal(load_saelens(tmp_path).threshold, sae.threshold)


def test_saelens_keeps_apply_b_dec_to_input_false(tmp_path):
    cfg = SAEConfig(D_IN, D_SAE, "relu", apply_b_dec_to_input=False)
    sae = make_sae(cfg)
    with torch.no_grad():
        sae.b_dec.add_(1.0)  # a b_dec that matters
    save_saelens(sae, tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["apply_b_dec_to_input"] is False
    loaded = load_saelens(tmp_path)
    assert not loaded.cfg.apply_b_dec_to_input
    assert_same_outputs(sae, loaded, inputs())


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_batchtopk_loads_back_as_jumprelu_with_its_inference_codes(tmp_path, arch):
    sae = trained_sae(arch)
    save_saelens(sae, tmp_path)
    loaded = load_saelens(tmp_path)
    assert isinstance(loaded, JumpReLUSAE)
    assert torch.equal(loaded.threshold, torch.full((D_SAE,), 0.37))
    x = inputs()
    f = sae.encode(x)  # eval mode: pre * (pre > threshold)
    assert (f != 0).any() and (f == 0).any()
    assert torch.equal(loaded.encode(x), f)
    assert torch.equal(loaded.decode(f), sae.decode(f))


def test_batchtopk_without_estimated_threshold_is_refused(tmp_path):
    sae = make_sae(SAEConfig(D_IN, D_SAE, "batchtopk", k=K))  # threshold -1: not estimated
    with pytest.raises(ValueError, match="threshold is negative"):
        save_saelens(sae, tmp_path)


@pytest.mark.parametrize("arch", [a for a in SAELENS if a != "mp"])  # mp has no encoder
def test_saelens_tied_sae_loads_untied_with_same_outputs(tmp_path, arch):
    sae = trained_sae(arch, tied=True)
    save_saelens(sae, tmp_path)
    W_enc = load_file(tmp_path / "sae_weights.safetensors")["W_enc"]
    assert torch.equal(W_enc, sae.W_dec.detach().T)
    loaded = load_saelens(tmp_path).eval()
    assert not loaded.cfg.tied
    # The same weights, but the tied encoder multiplies by the transposed view W_dec.T and
    # the loaded one by a contiguous W_enc: BLAS may round the two layouts differently
    # (seen on AMD EPYC: 1 ulp), so equal up to float32 rounding, not bit for bit.
    x = inputs()
    for name, u, v in zip(("x_hat", "f", "pre_acts"), sae(x)[:3], loaded(x)[:3], strict=True):
        torch.testing.assert_close(u, v, rtol=1.3e-6, atol=1e-5, msg=name)


SAELENS_KEYS = {
    "relu": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "batchtopk": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "matryoshka": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"},
    "mp": {"W_dec", "b_dec"},
}


@pytest.mark.parametrize("arch", list(SAELENS_KEYS))
def test_saelens_files_have_saelens_keys_and_layout(tmp_path, arch):
    sae = trained_sae(arch)
    save_saelens(sae, tmp_path, metadata={"model_name": "gpt2", "hook_name": "blocks.8.x"})
    with open(tmp_path / "cfg.json") as fh:
        cfg = json.load(fh)
    assert cfg["architecture"] == {**SAELENS_NAME, "batchtopk": "jumprelu",
                                   "matryoshka": "jumprelu"}[arch]  # fmt: skip
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (D_IN, D_SAE, "float32")
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    assert cfg["metadata"]["model_name"] == "gpt2"
    assert cfg["metadata"]["hook_name"] == "blocks.8.x"
    assert cfg["metadata"]["seed"] == 0  # sae.cfg.metadata is kept
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    assert cfg.get("k") == (K if arch == "topk" else None)
    with safe_open(tmp_path / "sae_weights.safetensors", framework="pt") as f:
        assert set(f.keys()) == SAELENS_KEYS[arch]
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}  # noqa: SIM118
    assert shapes.get("W_enc", [D_IN, D_SAE]) == [D_IN, D_SAE]  # mp has no encoder
    assert shapes["W_dec"] == [D_SAE, D_IN] and shapes["b_dec"] == [D_IN]
    assert all(shapes[n] == [D_SAE] for n in SAELENS_KEYS[arch] - {"W_enc", "W_dec", "b_dec"})


def saelens_encode(arch: str, t: dict, x: torch.Tensor, k: int) -> torch.Tensor:
    """SAELens v6's encode, written from its source, on the raw tensors of the files."""
    x_c = x - t["b_dec"]
    if arch == "gated":
        active = (x_c @ t["W_enc"] + t["b_gate"] > 0).float()
        return active * torch.relu(x_c @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    z = x_c @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        return torch.relu(z)
    if arch == "topk":
        values, idx = z.topk(k, dim=-1)
        return torch.zeros_like(z).scatter(-1, idx, values.relu())
    return torch.relu(z) * (z > t["threshold"].relu())  # jumprelu


@pytest.mark.parametrize("arch", [a for a in SAELENS_KEYS if a != "mp"])  # mp: tests/test_mp.py
def test_saelens_formulas_on_raw_tensors_match_saelib(tmp_path, arch):
    sae = trained_sae(arch)
    save_saelens(sae, tmp_path)
    t = load_file(tmp_path / "sae_weights.safetensors")
    name = json.loads((tmp_path / "cfg.json").read_text())["architecture"]
    x = inputs()
    f = saelens_encode(name, t, x, K)
    assert torch.allclose(f, sae.encode(x), rtol=1e-6, atol=1e-6)
    assert torch.allclose(f @ t["W_dec"] + t["b_dec"], sae.decode(f), rtol=1e-6, atol=1e-6)


def test_saelens_topk_with_decoder_norm_rescaling_is_folded(tmp_path):
    """SAELens TopK with rescale_acts_by_decoder_norm: f = TopK(z * ||W_dec||),
    x_hat = (f / ||W_dec||) @ W_dec + b_dec."""
    sae = trained_sae("topk")
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])  # rows of unequal norm
    save_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {"rescale_acts_by_decoder_norm": True}))
    t = load_file(tmp_path / "sae_weights.safetensors")
    norms = t["W_dec"].norm(dim=-1)  # [d_sae]
    x = inputs()
    z = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
    values, idx = z.topk(K, dim=-1)
    f = torch.zeros_like(z).scatter(-1, idx, values.relu())
    x_hat = (f / norms) @ t["W_dec"] + t["b_dec"]
    assert not torch.equal(f != 0, sae.encode(x) != 0)  # the rescaling changes the support
    loaded = load_saelens(tmp_path)
    assert torch.allclose(loaded.encode(x), f, rtol=1e-5, atol=1e-6)
    assert torch.allclose(loaded(x).x_hat, x_hat, rtol=1e-5, atol=1e-6)


def test_saelens_older_cfg_keys(tmp_path):
    """SAELens < 6: no architecture (standard), topk as activation_fn, hook_point at the top."""
    sae = trained_sae("topk")
    save_saelens(sae, tmp_path)
    old = {
        "d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float32", "device": "cpu",
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": K},
        "apply_b_dec_to_input": True, "normalize_activations": False,
        "model_name": "gpt2", "hook_point": "blocks.8.hook_resid_pre", "context_size": 128,
    }  # fmt: skip
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    loaded = load_saelens(tmp_path)
    assert loaded.cfg.architecture == "topk" and loaded.cfg.k == K
    assert loaded.cfg.metadata == {
        "model_name": "gpt2",
        "hook_name": "blocks.8.hook_resid_pre",
        "context_size": 128,
    }
    assert torch.equal(loaded.encode(inputs()), sae.encode(inputs()))
    del old["activation_fn_str"], old["activation_fn_kwargs"]  # standard ReLU SAE
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    assert load_saelens(tmp_path).cfg.architecture == "relu"


# -- errors -------------------------------------------------------------------------------
def test_mlp_cannot_be_saved_for_saelens(tmp_path):
    with pytest.raises(ValueError, match=r"'mlp' has no SAELens equivalent.*'relu', 'topk'"):
        save_saelens(trained_sae("mlp"), tmp_path)


def test_load_sae_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json: file not found"):
        load_sae(tmp_path)
    save_sae(trained_sae("relu"), tmp_path)
    (tmp_path / "weights.safetensors").unlink()
    with pytest.raises(ValueError, match=r"weights\.safetensors: file not found"):
        load_sae(tmp_path)


def test_load_sae_unknown_format(tmp_path):
    save_sae(trained_sae("relu"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"format": "other.v9"}))
    with pytest.raises(ValueError, match=r"config\.json: 'format' is 'other.v9'"):
        load_sae(tmp_path)


def rewrite_weights(path, change):
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("b_enc"), r"missing tensors \['b_enc'\]"),
        (lambda t: t.update(extra=torch.zeros(2)), r"unexpected tensors \['extra'\]"),
        (
            lambda t: t.update(W_dec=t["W_dec"].T.contiguous()),
            r"tensor 'W_dec' has shape \[6, 10\], expected \[10, 6\]",
        ),
    ],
    ids=["missing", "extra", "shape"],
)
def test_load_sae_bad_tensors(tmp_path, change, message):
    save_sae(trained_sae("relu"), tmp_path)
    rewrite_weights(tmp_path / "weights.safetensors", change)
    with pytest.raises(ValueError, match=r"weights\.safetensors: " + message):
        load_sae(tmp_path)


def test_load_sae_corrupted_file_and_corrupted_tensor(tmp_path):
    save_sae(trained_sae("relu"), tmp_path)
    path = tmp_path / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip the bits of the last byte of the last tensor: the header is intact
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights\.safetensors: sha256 differs"):
        load_sae(tmp_path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(ValueError, match=r"weights\.safetensors: not a readable safetensors"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("normalize_activations", "expected_average_only_in", r"'normalize_activations'.*'none'"),
        ("architecture", "matryoshka_batchtopk", r"'architecture'.*\['standard', 'topk'"),
        ("dtype", "int8", r"'dtype' is 'int8'; allowed"),
        ("d_sae", 12, r"'W_enc' has shape \[6, 10\], expected \[6, 12\]"),
    ],
)
def test_load_saelens_refuses_what_it_cannot_load_faithfully(tmp_path, key, value, message):
    save_saelens(trained_sae("relu"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg | {key: value}))
    with pytest.raises(ValueError, match=message):
        load_saelens(tmp_path)


def test_load_saelens_missing_threshold_and_transposed_encoder(tmp_path):
    save_saelens(trained_sae("jumprelu"), tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    rewrite_weights(path, lambda t: t.pop("threshold"))
    with pytest.raises(ValueError, match=r"sae_weights\.safetensors: missing tensors \['thresh"):
        load_saelens(tmp_path)
    save_saelens(trained_sae("jumprelu"), tmp_path)
    rewrite_weights(path, lambda t: t.update(W_enc=t["W_enc"].T.contiguous()))
    with pytest.raises(ValueError, match=r"'W_enc' has shape \[10, 6\], expected \[6, 10\]"):
        load_saelens(tmp_path)


def test_gated_mapping_names_gate_bias(tmp_path):
    """saelib's b_enc is the gate bias: it must land in b_gate, not b_mag."""
    sae = trained_sae("gated")
    assert isinstance(sae, GatedSAE)
    save_saelens(sae, tmp_path)
    t = load_file(tmp_path / "sae_weights.safetensors")
    assert torch.equal(t["b_gate"], sae.b_enc.detach())
    assert torch.equal(t["b_mag"], sae.b_mag.detach())
    assert torch.equal(t["r_mag"], sae.r_mag.detach())
    assert torch.equal(t["W_enc"], sae.W_enc.detach())


def test_saelens_mp_settings_round_trip(tmp_path):
    """The pursuit's settings travel under SAELens's names (checked against a folder that
    SAELens 6.54 itself wrote: matching_pursuit, W_dec and b_dec only, these three keys)."""
    cfg = SAEConfig(D_IN, D_SAE, "mp", mp_steps=5, mp_residual_threshold=0.25,
                    mp_stop_on_repeat=False)  # fmt: skip
    save_saelens(make_sae(cfg), tmp_path)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert (raw["max_iterations"], raw["residual_threshold"]) == (5, 0.25)
    assert raw["stop_on_duplicate_support"] is False
    loaded = load_saelens(tmp_path)
    assert (loaded.cfg.mp_steps, loaded.cfg.mp_residual_threshold) == (5, 0.25)
    assert loaded.cfg.mp_stop_on_repeat is False
    raw.pop("max_iterations")  # SAELens's default: None, i.e. d_in steps
    (tmp_path / "cfg.json").write_text(json.dumps(raw))
    assert load_saelens(tmp_path).max_steps == D_IN
