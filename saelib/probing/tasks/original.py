"""The original datasets of Kantamneni et al. (2025), by name, from their PyPI package.

The authors of *Are Sparse Autoencoders Useful? A Case Study in Sparse Probing* ship their
cleaned datasets inside the wheel of ``sae-probes`` (pinned here, sha256 checked): one
zstd-compressed CSV per dataset with the columns ``prompt``, ``prompt_len``, ``target``.
The binary ones (targets 0/1 or False/True) become tasks named ``kantamneni_<dataset>``,
e.g. ``kantamneni_5_hist_fig_ismale``, built and loaded like every other task::

    build(out, ["kantamneni"], family_kwargs={"kantamneni": {"datasets": ["87_glue_cola"]}})
    load_task("kantamneni_87_glue_cola", out)

The CSVs have no source column, so each distinct prompt is its own group (repeated
prompts share one, so a split never puts the same text on both sides).
"""

from __future__ import annotations

import csv
import io
import zipfile

from saelib.files import sha256_bytes
from saelib.lm.sources import fetch_wheel
from saelib.probing.tasks.families import Family
from saelib.validation import require

PREFIX = "sae_probes/data/cleaned_data/"
SUFFIX = ".csv.zst"
POSITIVE = {"1": True, "True": True, "0": False, "False": False}


def _read_csv(data: bytes) -> list[dict[str, str]]:
    import zstandard  # only this family needs it

    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))


def task_name(dataset: str) -> str:
    return "kantamneni_" + dataset.replace(" ", "_")


def kantamneni(datasets: list[str] | None = None) -> Family:
    """The binary datasets of ``sae-probes`` (all, or those named in ``datasets``).

    Raises ``ValueError`` naming the unknown or non-binary ones among ``datasets``.
    """
    path, record = fetch_wheel("sae_probes")  # SourceUnavailable when PyPI cannot be had
    with zipfile.ZipFile(path) as wheel:
        files = {
            n[len(PREFIX) : -len(SUFFIX)]: n
            for n in wheel.namelist()
            if n.startswith(PREFIX) and n.endswith(SUFFIX)
        }
        wanted = sorted(files) if datasets is None else list(datasets)
        unknown = [d for d in wanted if d not in files]
        require(
            not unknown, "datasets", unknown, f"among the datasets of sae-probes {sorted(files)}"
        )
        items, tasks, not_binary = [], {}, []
        for dataset in wanted:
            rows = _read_csv(wheel.read(files[dataset]))
            if not rows or {r["target"] for r in rows} - set(POSITIVE):
                not_binary.append(dataset)
                continue
            pos, neg = f"{dataset}:1", f"{dataset}:0"
            for r in rows:
                digest = sha256_bytes(r["prompt"])[:16]
                label = pos if POSITIVE[r["target"]] else neg
                items.append((r["prompt"], label, f"{dataset}/{digest}"))
            tasks[task_name(dataset)] = ({pos}, {neg})
    binary = datasets is None or not not_binary
    require(binary, "datasets (not binary)", not_binary, "none: targets 0/1 only")
    record = record | {"binary_datasets": len(tasks), "not_binary": len(not_binary)}
    return Family(items, tasks, [record])
