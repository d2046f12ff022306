"""Harvest speed: eager against SDPA attention, through the bridge and without it.

    python benchmarks/harvest_attention.py             # SmolLM2-135M, block 6, 2 threads

Six ways to get ``blocks.6.hook_resid_post`` of the same token batches, timed in one
process at the same thread count, interleaved over repeats:

- the bridge (what ``saelib.lm.activations.harvest`` ran until ``saelib.lm.residual``):
  ``run_with_cache`` with ``stop_at_layer=7``, the model loaded with eager or SDPA attention;
- the raw Hugging Face forward truncated at the same block (embedding, blocks 0-6, no
  hooks, no final norm, no unembedding), eager or SDPA: the floor a harvest could reach;
- ``saelib.lm.residual.residual_forward``, what the harvest now runs for residual hooks.

Before timing, the four outputs are compared (the precondition for switching attention):
the largest absolute difference to the bridge-eager activations, and its size relative to
their RMS. Writes ``results/harvest_attention.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from machine_info import cpu_model, memory_gib

HERE = Path(__file__).resolve().parent


def truncated(attention: str, layer: int):
    """A separate HF model with only blocks ``0..layer``: ``tokens -> [batch, seq, d_model]``,
    the residual stream after block ``layer`` (before any final norm)."""
    from saelib.lm.model import load_hf

    hf, _ = load_hf(attention=attention)
    hf.model.layers = hf.model.layers[: layer + 1]
    hf.model.norm = torch.nn.Identity()  # HF's last hidden state is after the final norm
    return lambda seqs: hf.model(seqs).last_hidden_state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "harvest_attention.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from saelib.lm.corpus import build_corpus
    from saelib.lm.model import load_model, load_tokenizer, resid_hook
    from saelib.lm.residual import residual_forward

    tokens = build_corpus(load_tokenizer(), n_ctx=args.n_ctx, n_tokens=args.tokens).tokens
    hook, stop = resid_hook(args.layer), args.layer + 1
    models = {att: load_model(attention=att) for att in ("eager", "sdpa")}

    def bridge(att):
        return lambda seqs: models[att].bridge.run_with_cache(
            seqs, names_filter=[hook], stop_at_layer=stop
        )[1][hook]

    def fast(att):  # what saelib.lm.activations.harvest now runs for residual hooks
        return lambda seqs: residual_forward(models[att], seqs, [hook])[hook]

    cases = {
        "bridge, eager attention (the harvest until now)": bridge("eager"),
        "bridge, SDPA attention": bridge("sdpa"),
        "raw HF forward truncated at the block, eager": truncated("eager", args.layer),
        "raw HF forward truncated at the block, SDPA": truncated("sdpa", args.layer),
        "saelib's harvest path (saelib.lm.residual), eager": fast("eager"),
        "saelib's harvest path (saelib.lm.residual), SDPA": fast("sdpa"),
    }
    with torch.inference_mode():
        check = tokens[: 4 * args.batch_size]
        ref = cases["bridge, eager attention (the harvest until now)"](check)
        rms = float(ref.pow(2).mean().sqrt())
        agreement = {}
        for name, fn in cases.items():
            diff = float((fn(check) - ref).abs().max())
            agreement[name] = {"max_abs_diff": diff, "relative_to_rms": diff / rms}
            print(f"{name:48s} max |diff| {diff:.2e} ({diff / rms:.1e} of the RMS)", flush=True)

        for fn in cases.values():  # warm-up
            fn(tokens[: args.batch_size])
        times = {name: [] for name in cases}
        loads = []
        for _ in range(args.repeats):
            for name, fn in cases.items():  # interleaved: drift hits every case alike
                loads.append(os.getloadavg()[0])
                start = time.perf_counter()
                for seqs in tokens.split(args.batch_size):
                    fn(seqs)
                times[name].append(time.perf_counter() - start)
    n = tokens.numel()
    rows = []
    for name in cases:
        t = statistics.median(times[name])
        rows.append({"case": name, "seconds_all": times[name], "tokens_per_s": n / t,
                     **agreement[name]})  # fmt: skip
        print(f"{name:48s} {n / t:8.0f} tok/s", flush=True)
    import transformers

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "memory_gib": memory_gib()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "settings": vars(args),
        "tokens": n,
        "load_average": [min(loads), max(loads)],
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    base = result["rows"][0]["tokens_per_s"]
    lines = [
        f"| forward to `blocks.{s['layer']}.hook_resid_post` | tokens/s | vs the bridge (eager) "
        "| max abs diff to the bridge's (relative to RMS) |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f}x "
            f"| {r['max_abs_diff']:.1e} ({r['relative_to_rms']:.0e}) |"
        )
    lo, hi = result["load_average"]
    lines += [
        "",
        f"SmolLM2-135M (float32), {result['tokens']:,} tokens in sequences of {s['n_ctx']}, "
        f"batches of {s['batch_size']}, block {s['layer']}; median of {s['repeats']} "
        f"interleaved repeats; {s['threads']} torch threads for every case; "
        f"{m['cpu']} ({m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB); torch "
        f"{result['versions']['torch']}, transformers {result['versions']['transformers']}; "
        f"{result['date']}; load average {lo:.1f} to {hi:.1f}.",
        "Command: `python benchmarks/harvest_attention.py`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
