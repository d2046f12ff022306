"""Do SAELens-saved MP-SAE and Matryoshka BatchTopK folders load into saelib with SAELens's
own codes? Exactness, not speed.

    python benchmarks/saelens_new_architectures.py     # needs benchmarks/.venv-saelens

In SAELens's venv (``setup_saelens_venv.sh``) this script builds, with random weights:
a ``matching_pursuit`` SAE at SAELens's default settings and one with 5 steps and no early
stop, and a trained-looking ``matryoshka_batchtopk`` SAE (threshold set) saved for
inference, which SAELens writes as ``jumprelu``. It saves each folder and SAELens's codes
and reconstructions of fixed inputs. Then, in saelib's venv, ``load_saelens`` reads each
folder and the codes and reconstructions are compared bit for bit. Results:
``benchmarks/results/saelens_new_architectures.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAELENS_PYTHON = HERE / ".venv-saelens" / "bin" / "python"
RESULTS = HERE / "results" / "saelens_new_architectures.md"
D_IN, D_SAE, BATCH = 16, 64, 256
CASES = {  # name -> (SAELens config class keywords)
    "mp_defaults": {},
    "mp_5_steps_no_stop": {
        "max_iterations": 5, "residual_threshold": 0.0, "stop_on_duplicate_support": False,
    },
    "matryoshka": {"k": 4, "matryoshka_widths": [8, 24, D_SAE]},
}  # fmt: skip


def saelens_side(out: Path) -> None:
    """Runs in SAELens's venv: write each case's folder and SAELens's outputs."""
    import torch
    from sae_lens import SAE
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE, MatchingPursuitSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from safetensors.torch import save_file

    torch.manual_seed(0)  # SAELens initialises from the global generator
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, D_IN, generator=g)
    for name, kw in CASES.items():
        folder = out / name
        if name.startswith("mp"):
            sae = MatchingPursuitSAE(MatchingPursuitSAEConfig(d_in=D_IN, d_sae=D_SAE, **kw))
            with torch.no_grad():
                W = torch.randn(D_SAE, D_IN, generator=g)
                sae.W_dec.copy_(W / W.norm(dim=-1, keepdim=True))
                sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=g))
            sae.save_model(folder)
        else:
            cfg = MatryoshkaBatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, **kw)
            train = MatryoshkaBatchTopKTrainingSAE(cfg)
            with torch.no_grad():
                for p in train.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
                train.topk_threshold.fill_(0.37)
            train.save_inference_model(folder)
            sae = SAE.load_from_disk(folder)
        with torch.no_grad():
            f = sae.encode(x)
            save_file({"x": x, "f": f, "x_hat": sae.decode(f)}, str(folder / "outputs.safetensors"))
    import sae_lens

    print(json.dumps({"sae_lens": sae_lens.__version__, "torch": torch.__version__}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--saelens-side":
        saelens_side(Path(sys.argv[2]))
        return
    import torch
    from safetensors.torch import load_file

    from saelib.saelens import load_saelens

    if not SAELENS_PYTHON.exists():
        venv = SAELENS_PYTHON.parent.parent
        sys.exit(f"no SAELens venv at {venv}; run bash {HERE}/setup_saelens_venv.sh")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [str(SAELENS_PYTHON), __file__, "--saelens-side", tmp],
            capture_output=True, text=True, cwd=tmp,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"the SAELens side failed:\n{proc.stderr[-3000:]}")
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
        for name in CASES:
            folder = Path(tmp) / name
            want = load_file(folder / "outputs.safetensors")
            sae = load_saelens(folder).eval()
            raw = json.loads((folder / "cfg.json").read_text())
            with torch.no_grad():
                f = sae.encode(want["x"])
                x_hat = sae.decode(f)
            rows.append({
                "case": name, "SAELens architecture": raw["architecture"],
                "saelib architecture": sae.cfg.architecture,
                "codes equal": bool(torch.equal(f, want["f"])),
                "max abs codes diff": float((f - want["f"]).abs().max()),
                "reconstructions equal": bool(torch.equal(x_hat, want["x_hat"])),
                "mean L0": float((want["f"] != 0).sum(1).float().mean()),
            })  # fmt: skip
    head = list(rows[0])
    lines = [
        "# SAELens-saved MP-SAE and Matryoshka folders loaded by saelib",
        "",
        f"`python benchmarks/saelens_new_architectures.py`; SAELens {versions['sae_lens']}, "
        f"torch {versions['torch']} (both venvs); {BATCH} random inputs, d_in {D_IN}, "
        f"d_sae {D_SAE}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
