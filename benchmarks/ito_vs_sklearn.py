"""saelib's ITO solvers against scikit-learn's ``sparse_encode`` on one planted problem.

A unit-norm Gaussian dictionary ``D [n_atoms, d]`` (atoms as rows, the layout of both
``saelib.coding.ito`` and ``sklearn.decomposition.sparse_encode``), codes with ``l0`` non-zeros per
signal at random atoms with magnitudes ``|N(0, 1)| + 0.1``, and signals ``x = codes @ D``
(float32, no noise). Every method codes the same ``x`` on the same ``D``:

- saelib (torch, float32): ``omp``, ``gradient_pursuit`` and ``matching_pursuit`` at
  ``l0`` atoms, and ``fista`` on the non-negative lasso at ``l1``;
- scikit-learn ``sparse_encode`` (numpy, ``--sklearn-dtype``): ``omp`` at
  ``n_nonzero_coefs=l0``, ``lasso_lars`` and ``lasso_cd`` at ``alpha=l1`` (``positive=True``),
  all with ``n_jobs=1``; plus ``omp`` with ``n_jobs=threads`` as a sensitivity row.

The lasso scaling, read from sklearn's source (``_sparse_encode_precomputed``): for
``lasso_lars``/``lasso_cd`` it fits ``LassoLars``/``Lasso`` with ``alpha / n_features`` on
``(dictionary.T, x.T)``, and those minimise ``1/(2 n_features) ||x - code @ D||^2 +
(alpha / n_features) ||code||_1``; times ``n_features`` this is ``0.5 ||x - code @ D||^2 +
alpha ||code||_1``, which is saelib's lasso with ``l1 = alpha``. So one number, ``--l1``,
sets the same problem for fista, lasso_lars and lasso_cd.

Each method is timed (wall clock, median of ``--repeats`` after one warm-up call on the first
signals) with ``torch.set_num_threads(threads)`` and threadpoolctl's
``threadpool_limits(threads)``. A scikit-learn method whose projected time exceeds
``--sklearn-call-seconds`` is timed on the first ``m`` signals and scaled linearly; its
Gram matrix ``D D^T`` (computed once per call, exactly as ``sparse_encode`` does) is timed
separately and not scaled: ``t = t_gram + t_encode(m) * n / m``. Quality (FVU, L0, support
recovery) of a subset-timed method is measured on its ``m`` signals and compared with the
saelib methods on the same ``m`` signals.

Run from the repository root: ``.venv/bin/python benchmarks/ito_vs_sklearn.py`` (full size,
writes ``benchmarks/results/ito_vs_sklearn.json`` and ``.md``) or ``--quick`` (small smoke
run, prints the table, writes nothing unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from machine_info import cpu_model
from sklearn.decomposition import sparse_encode
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_info, threadpool_limits

from saelib.coding import ito
from saelib.metrics import fvu

DEFAULT_OUT = Path("benchmarks/results/ito_vs_sklearn.json")
FULL = {"n_atoms": 4608, "d": 576, "n_signals": 2048, "l0": 32}
QUICK = {"n_atoms": 512, "d": 128, "n_signals": 256, "l0": 8}
# A scikit-learn method "matches" a saelib method when its FVU is at most the saelib FVU
# times (1 + FVU_RTOL) plus FVU_ATOL. The absolute part treats every FVU below 1e-6 as exact
# recovery (float32 rounding alone gives ~1e-13); the relative part absorbs solver tolerance.
FVU_RTOL, FVU_ATOL = 0.01, 1e-6
TARGET_SPEEDUP = 10.0
LASSO = ("ista", "fista")


# ---------------------------------------------------------------- problem and metrics


def planted_problem(n_atoms: int, d: int, n: int, l0: int, seed: int):
    """Unit-norm Gaussian ``D [n_atoms, d]``, ``l0``-sparse non-negative codes, ``x = codes @ D``.

    Returns float32 ``D``, ``x [n, d]`` and the true support ``[n, l0]`` (long)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_atoms, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    support = torch.rand(n, n_atoms, generator=g).topk(l0, dim=1).indices
    values = torch.randn(n, l0, generator=g).abs() + 0.1
    codes = torch.zeros(n, n_atoms).scatter_(1, support, values)
    return D, codes @ D, support


def quality(x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor, support: torch.Tensor):
    """FVU (saelib.metrics.fvu), mean L0 (non-zero codes) and support recovery (mean fraction
    of each signal's true atoms that get a non-zero code)."""
    nonzero = codes != 0
    found = nonzero.gather(1, support).double().mean(1)
    return {
        "fvu": fvu(x, x_hat),
        "mean_l0": nonzero.sum(1).double().mean().item(),
        "support_recovery": found.mean().item(),
    }


# ---------------------------------------------------------------- timing


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


class SaelibMethod:
    """One saelib solver on all signals; ``run`` returns the seconds of one call."""

    library = "saelib"

    def __init__(self, name: str, fn, params: dict, D, x, support):
        self.name, self.label, self.fn, self.params = name, f"saelib {name}", fn, params
        self.D, self.x, self.support = D, x, support
        self.times, self.loads, self.result = [], [], None

    def warmup(self, n_signals: int) -> None:
        self.fn(self.D, self.x[:n_signals])  # threads, allocator, first-call costs

    def run(self) -> None:
        self.loads.append(loadavg())
        t0 = time.perf_counter()
        self.result = self.fn(self.D, self.x)
        self.times.append(time.perf_counter() - t0)

    def row(self) -> tuple[dict, torch.Tensor]:
        r = self.result
        row = {
            "method": self.label,
            "library": self.library,
            "algorithm": self.name,
            "params": self.params,
            "dtype": str(self.x.dtype).removeprefix("torch."),
            "seconds": statistics.median(self.times),
            "seconds_repeats": self.times,
            "n_signals_timed": len(self.x),
            "scaled": False,
            "loadavg_at_repeats": self.loads,
            **quality(self.x, r.x_hat, r.codes, self.support),
        }
        if self.name in ("fista", "ista"):
            row["n_iter"] = r.n_iter
            row["converged_fraction"] = r.converged.double().mean().item()
        return row, r.x_hat


def sklearn_call(X: np.ndarray, Dn: np.ndarray, kwargs: dict):
    """One timed ``sparse_encode`` call: the Gram matrix as sparse_encode computes it, then the
    encoding with that Gram. Returns (t_gram, t_encode, codes, n_convergence_warnings)."""
    t0 = time.perf_counter()
    gram = np.dot(Dn, Dn.T)
    t1 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        codes = sparse_encode(X, Dn, gram=gram, **kwargs)
    t2 = time.perf_counter()
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return t1 - t0, t2 - t1, codes, n_warn


class SklearnMethod:
    """``sparse_encode`` on the first ``m`` signals (all of them unless the warm-up projects
    a call on all signals to exceed ``call_budget`` seconds); ``run`` records the time
    scaled to all signals, ``t_gram + t_encode(m) * n / m``."""

    library = "scikit-learn"

    def __init__(self, label: str, kwargs: dict, Dn, Xn, x, support, call_budget: float):
        self.label, self.kwargs, self.Dn, self.Xn = label, kwargs, Dn, Xn
        self.x, self.support, self.call_budget = x, support, call_budget
        self.m, self.times, self.grams, self.encodes, self.loads = len(Xn), [], [], [], []
        self.codes, self.n_warn = None, 0

    def warmup(self, n_signals: int) -> None:
        _, t_enc, _, _ = sklearn_call(self.Xn[:n_signals], self.Dn, self.kwargs)
        n, per_signal = len(self.Xn), t_enc / n_signals
        if per_signal * n > self.call_budget:
            self.m = max(n_signals, min(n, int(self.call_budget / per_signal)))

    def run(self) -> None:
        self.loads.append(loadavg())
        t_gram, t_enc, self.codes, self.n_warn = sklearn_call(
            self.Xn[: self.m], self.Dn, self.kwargs
        )
        self.grams.append(t_gram)
        self.encodes.append(t_enc)
        self.times.append(t_gram + t_enc * len(self.Xn) / self.m)

    def row(self) -> tuple[dict, torch.Tensor]:
        codes = torch.from_numpy(np.asarray(self.codes))
        x_hat = codes.double() @ torch.from_numpy(self.Dn).double()
        row = {
            "method": self.label,
            "library": self.library,
            "algorithm": self.kwargs["algorithm"],
            "sparse_encode_kwargs": self.kwargs,
            "dtype": str(self.Dn.dtype),
            "codes_dtype": str(np.asarray(self.codes).dtype),
            "seconds": statistics.median(self.times),
            "seconds_repeats": self.times,
            "seconds_gram_repeats": self.grams,
            "seconds_encode_repeats": self.encodes,
            "n_signals_timed": self.m,
            "scaled": self.m < len(self.Xn),
            "convergence_warnings_last_call": self.n_warn,
            "loadavg_at_repeats": self.loads,
            **quality(self.x[: self.m], x_hat, codes, self.support[: self.m]),
        }
        return row, x_hat


# ---------------------------------------------------------------- comparison


def _seconds(row: dict) -> float:
    return row["seconds"]


def _seconds_of_first(pair: tuple) -> float:
    return pair[0]["seconds"]


def compare(rows: list[dict], x: torch.Tensor, x_hats: dict[str, torch.Tensor]) -> list[dict]:
    """Per saelib method: speed-up against the fastest scikit-learn method (n_jobs=1) whose
    FVU, on the signals that method was scored on, is at most the saelib FVU on the same
    signals (within FVU_RTOL, FVU_ATOL); the same over all scikit-learn rows (including
    n_jobs > 1); and the plain ratio to the fastest scikit-learn method with n_jobs=1."""
    sk = [r for r in rows if r["library"] == "scikit-learn"]
    sk1 = [r for r in sk if r["sparse_encode_kwargs"].get("n_jobs", 1) == 1]
    fastest = min(sk1, key=_seconds)
    out = []
    for r in (r for r in rows if r["library"] == "saelib"):
        matched = []  # (sklearn row, saelib FVU on that row's signals)
        for s in sk:
            m = s["n_signals_timed"]
            own = fvu(x[:m], x_hats[r["method"]][:m])
            if s["fvu"] <= own * (1 + FVU_RTOL) + FVU_ATOL:
                matched.append((s, own))
        matched.sort(key=_seconds_of_first)
        s1, own1 = next(((s, own) for s, own in matched if s in sk1), (None, None))
        s_any = matched[0][0] if matched else None
        # The same optimisation problem: the lasso for ista/fista, fixed L0 for the pursuits.
        same_algos = ("lasso_lars", "lasso_cd") if r["algorithm"] in LASSO else ("omp",)
        same = min((s for s in sk1 if s["algorithm"] in same_algos), key=_seconds, default=None)
        out.append(
            {
                "saelib_method": r["method"],
                "saelib_seconds": r["seconds"],
                "saelib_fvu": r["fvu"],
                "matched_sklearn_method": s1["method"] if s1 else None,
                "matched_sklearn_fvu": s1["fvu"] if s1 else None,
                "saelib_fvu_on_matched_signals": own1,
                "speedup_matched_fvu": s1["seconds"] / r["seconds"] if s1 else None,
                "matched_sklearn_method_any_n_jobs": s_any["method"] if s_any else None,
                "speedup_matched_fvu_any_n_jobs": s_any["seconds"] / r["seconds"]
                if s_any
                else None,
                "same_problem_sklearn_method": same["method"] if same else None,
                "speedup_same_problem": same["seconds"] / r["seconds"] if same else None,
                "fastest_sklearn_method": fastest["method"],
                "speedup_vs_fastest_sklearn": fastest["seconds"] / r["seconds"],
            }
        )
    return out


# ---------------------------------------------------------------- machine facts


def machine_facts(threads: int) -> dict:
    env_keys = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available_to_process": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "threads": threads,
        "torch_num_threads": torch.get_num_threads(),
        "torch_parallel_info": torch.__config__.parallel_info().strip().splitlines(),
        "threadpoolctl": [
            {k: v for k, v in p.items() if k != "filepath"} for p in threadpool_info()
        ],
        "env": {k: os.environ.get(k) for k in env_keys},
    }


# ---------------------------------------------------------------- markdown


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _speedup(cm: dict, key: str, vs: str) -> str:
    if cm.get(key) is None:
        return "no sklearn method matches"
    return f"{cm[key]:.1f}x ({cm[vs].removeprefix('sklearn ')})"


def markdown(res: dict) -> str:
    p, m, c = res["problem"], res["machine"], res["config"]
    lines = [
        f"Planted problem: {p['n_atoms']} unit-norm Gaussian atoms in {p['d']} dimensions, "
        f"{p['n_signals']} signals of {p['l0']} non-negative atoms (|N(0,1)|+0.1), no noise; "
        f"lasso l1 = alpha = {c['l1']:g}. "
        f"{m['cpu_model']}, {m['threads']} threads (torch and BLAS), scikit-learn n_jobs=1 "
        f"unless stated; torch {m['torch']}, numpy {m['numpy']}, scikit-learn "
        f"{m['scikit_learn']}; {res['date']}.",
        "",
        "| method | dtype | signals timed | seconds | FVU | mean L0 | support recovery "
        "| speed-up at matched FVU (vs) | same, sklearn n_jobs may be >1 "
        "| vs sklearn on the same problem | vs fastest sklearn |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    comps = {cm["saelib_method"]: cm for cm in res["comparisons"]}
    n = p["n_signals"]
    for r in res["methods"]:
        timed = str(r["n_signals_timed"]) + (f" (scaled to {n})" if r["scaled"] else "")
        cm = comps.get(r["method"])
        matched = matched_any = same = ratio = ""
        if cm is not None:
            matched = _speedup(cm, "speedup_matched_fvu", "matched_sklearn_method")
            matched_any = _speedup(
                cm, "speedup_matched_fvu_any_n_jobs", "matched_sklearn_method_any_n_jobs"
            )
            same = _speedup(cm, "speedup_same_problem", "same_problem_sklearn_method")
            ratio = f"{cm['speedup_vs_fastest_sklearn']:.1f}x"
        lines.append(
            f"| {r['method']} | {r['dtype']} | {timed} | {r['seconds']:.2f} | "
            f"{_fmt(r['fvu'], '.2e')} | {r['mean_l0']:.1f} | {r['support_recovery']:.3f} | "
            f"{matched} | {matched_any} | {same} | {ratio} |"
        )
    t = res["target"]
    lines += [
        "",
        f"Target: saelib at least {t['speedup']:g}x faster than the fastest scikit-learn "
        f"method at equal or better FVU (n_jobs=1). Met by: "
        f"{', '.join(t['met_by']) if t['met_by'] else 'none'}.",
        "",
        f"Command: `{res['command']}`",
    ]
    if res.get("notes"):
        lines += [""] + [f"- {note}" for note in res["notes"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key, value in FULL.items():
        help_ = f"default {value}, {QUICK[key]} with --quick"
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=help_)
    ap.add_argument(
        "--l1",
        type=float,
        default=0.05,
        help="lasso penalty for fista / lasso_lars / lasso_cd (same scaling in both "
        "libraries); default half the smallest planted magnitude",
    )
    ap.add_argument("--fista-tol", type=float, default=1e-4)
    ap.add_argument("--fista-max-iter", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sklearn-dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument(
        "--sklearn-call-seconds",
        type=float,
        default=30.0,
        help="time a scikit-learn method on a subset of signals (scaled linearly) when one "
        "call on all signals is projected to take longer than this",
    )
    ap.add_argument("--warmup-signals", type=int, default=32)
    ap.add_argument("--no-parallel-sklearn", action="store_true", help="skip omp n_jobs=threads")
    ap.add_argument("--quick", action="store_true", help=f"small smoke run: {QUICK}")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON path (default {DEFAULT_OUT})")
    ap.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from an existing --out JSON"
    )
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if args.markdown_only:
        path = out or DEFAULT_OUT
        res = json.loads(path.read_text())
        path.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
        return

    command = shlex.join(
        [os.path.relpath(sys.executable) if sys.executable else "python", *sys.argv]
    )
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(limits=args.threads)  # noqa: F841  (kept alive: the limit holds)

    D, x, support = planted_problem(args.n_atoms, args.d, args.n_signals, args.l0, args.seed)
    Dn = D.numpy().astype(args.sklearn_dtype)
    Xn = x.numpy().astype(args.sklearn_dtype)
    l0, l1, reps, warm = args.l0, args.l1, args.repeats, min(args.warmup_signals, len(x))

    saelib_params = {
        "omp": {"l0": l0},
        "gradient_pursuit": {"l0": l0, "nonneg": True},
        "matching_pursuit": {"l0": l0, "nonneg": True},
        "fista": {
            "l1": l1,
            "nonneg": True,
            "tol": args.fista_tol,
            "max_iter": args.fista_max_iter,
            "restart": True,
        },
    }
    saelib_fns = {
        "omp": lambda D, x: ito.omp(D, x, l0),
        "gradient_pursuit": lambda D, x: ito.gradient_pursuit(D, x, l0, nonneg=True),
        "matching_pursuit": lambda D, x: ito.matching_pursuit(D, x, l0, nonneg=True),
        "fista": lambda D, x: ito.fista(
            D, x, l1, nonneg=True, tol=args.fista_tol, max_iter=args.fista_max_iter
        ),
    }
    sk_kwargs = {
        "sklearn omp": {"algorithm": "omp", "n_nonzero_coefs": l0, "n_jobs": 1},
        "sklearn lasso_lars": {
            "algorithm": "lasso_lars",
            "alpha": l1,
            "positive": True,
            "n_jobs": 1,
        },
        "sklearn lasso_cd": {"algorithm": "lasso_cd", "alpha": l1, "positive": True, "n_jobs": 1},
    }
    if not args.no_parallel_sklearn and args.threads > 1:
        sk_kwargs[f"sklearn omp (n_jobs={args.threads})"] = {
            "algorithm": "omp",
            "n_nonzero_coefs": l0,
            "n_jobs": args.threads,
        }
    methods = [
        SaelibMethod(name, fn, saelib_params[name], D, x, support)
        for name, fn in saelib_fns.items()
    ] + [
        SklearnMethod(label, kw, Dn, Xn, x, support, args.sklearn_call_seconds)
        for label, kw in sk_kwargs.items()
    ]

    t_start = time.perf_counter()
    for meth in methods:
        meth.warmup(warm)
    # Round robin: every repeat runs every method once, so drifting load from other
    # processes on the machine is shared between the methods instead of hitting one.
    for rep in range(reps):
        for meth in methods:
            meth.run()
            print(f"repeat {rep + 1}/{reps}  {meth.label:<26} {meth.times[-1]:8.2f} s", flush=True)
    rows, x_hats = [], {}
    for meth in methods:
        row, x_hats[meth.label] = meth.row()
        rows.append(row)

    comparisons = compare(rows, x, x_hats)
    met = [
        c["saelib_method"]
        for c in comparisons
        if c["speedup_matched_fvu"] is not None and c["speedup_matched_fvu"] >= TARGET_SPEEDUP
    ]
    notes = [
        "seconds: wall clock, median of the repeats after one warm-up call on the first "
        f"{warm} signals; the repeats run round robin over the methods; saelib always codes "
        "all signals.",
        "sklearn alpha = saelib l1: sparse_encode fits (Lasso|LassoLars)(alpha / n_features) "
        "on (D.T, x.T), i.e. it minimises 0.5 ||x - code D||^2 + alpha ||code||_1 per signal.",
        f"Matched FVU: sklearn FVU <= saelib FVU * (1 + {FVU_RTOL}) + {FVU_ATOL:g}, both on the "
        "signals the sklearn method was scored on; below 1e-6 both count as exact recovery.",
        "Scaled rows: timed on the first m signals, t = t_gram + t_encode(m) * n / m (every "
        "sparse_encode algorithm codes one signal at a time after the shared Gram matrix).",
        f"sklearn runs in {args.sklearn_dtype} (--sklearn-dtype; sparse_encode accepts "
        "float32 and float64, codes_dtype records what it returned); saelib in float32.",
    ]
    if any(r["scaled"] for r in rows):
        notes.append(
            "Scaled methods: "
            + ", ".join(
                f"{r['method']} ({r['n_signals_timed']} of {args.n_signals})"
                for r in rows
                if r["scaled"]
            )
        )
    res = {
        "benchmark": "ito_vs_sklearn",
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds_total": time.perf_counter() - t_start,
        "machine": machine_facts(args.threads),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "problem": {
            "n_atoms": args.n_atoms,
            "d": args.d,
            "n_signals": args.n_signals,
            "l0": l0,
            "seed": args.seed,
            "dictionary": "Gaussian, rows normalised to unit norm, float32",
            "codes": "l0 distinct uniform random atoms per signal, magnitudes |N(0,1)| + 0.1",
            "signals": "x = codes @ D, float32, no noise",
        },
        "lasso_scaling": {
            "saelib": "0.5 ||x - c D||^2 + l1 ||c||_1",
            "sklearn_sparse_encode": "Lasso/LassoLars(alpha=alpha/n_features) on (D.T, x.T) = "
            "1/(2 n_features) ||x - c D||^2 + (alpha/n_features) ||c||_1, "
            "i.e. 0.5 ||x - c D||^2 + alpha ||c||_1 after multiplying by n_features",
            "equivalence": "alpha = l1",
            "source": "sklearn/decomposition/_dict_learning.py, _sparse_encode_precomputed",
        },
        "matching_rule": {"fvu_rtol": FVU_RTOL, "fvu_atol": FVU_ATOL},
        "methods": rows,
        "comparisons": comparisons,
        "target": {"speedup": TARGET_SPEEDUP, "met_by": met},
        "notes": notes,
    }
    text = markdown(res)
    print()
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
