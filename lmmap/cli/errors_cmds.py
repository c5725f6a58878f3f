"""Error analysis commands: ``lmmap errors`` (SPEC §5) and ``lmmap stability`` (SPEC §6).

The numerics live in :mod:`lmmap.analyses.errors` and :mod:`lmmap.analyses.stability`;
this module loads the map from the store, calls them, and writes CSV tables
and figures (PNG + self-contained HTML).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from lmmap.data.atomic import atomic_write
from lmmap.exceptions import LmmapError
from lmmap.cli._app import StoreOption, app, check_color_by, check_replicates, console, lit, output_dir

if TYPE_CHECKING:  # annotations only: the heavy modules load when a command runs
    import pandas as pd

METHOD_COLOURS = {"uniform": "#1f77b4", "ls": "#d62728", "kl": "#2ca02c"}
METHOD_LABELS = {"uniform": "Uniform", "ls": "LS", "kl": "KL"}


# ----------------------------------------------------------------------------- parsing


def _positive_int(text: str) -> int | None:
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        return None
    return int(v) if v.is_integer() and v >= 1 else None


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    """``"10:90:10,100,1000:3000:1000"`` → [10, 20, …, 90, 100, 1000, 2000, 3000] (ranges inclusive)."""
    if text is None or not str(text).strip():
        return None
    out: list[int] = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        nums = [_positive_int(p) for p in item.split(":")]
        if None in nums or len(nums) not in (1, 3):
            raise LmmapError(f"{what}: {item!r} is not a positive integer or a start:stop:step range (e.g. 10:90:10)")
        if len(nums) == 1:
            out.append(nums[0])
        else:
            start, stop, step = nums
            if stop < start:
                raise LmmapError(f"{what}: range {item!r} ends before it starts")
            out.extend(range(start, stop + 1, step))
    if not out:
        raise LmmapError(f"{what} is empty")
    return out


def parse_methods(text: str) -> list[str]:
    from lmmap.maths.resampling import check_method

    methods = [check_method(m.strip()) for m in str(text).split(",") if m.strip()]
    if not methods:
        raise LmmapError("--methods is empty: give e.g. uniform,ls,kl")
    return methods


def parse_setting(text: str) -> tuple[str, int]:
    """``"uniform:10000"`` → ("uniform", 10000)."""
    from lmmap.maths.resampling import check_method, check_sample_size

    m = re.fullmatch(r"\s*([A-Za-z]+)\s*[:=]\s*([0-9_]+)\s*", str(text))
    if not m:
        raise LmmapError(f"--compare {text!r}: write METHOD:N, e.g. uniform:10000")
    return check_method(m.group(1)), check_sample_size(int(m.group(2).replace("_", "")))


def _load_map(store: Path, model, exclude, no_clip: bool, allow_mixed: bool):
    from lmmap.map import ModelMap
    from lmmap.analyses.select import complete_models
    from lmmap.cli.resample_cmds import _model_list

    from lmmap.data.store import Store

    s = Store(store)
    models = _model_list(model, exclude, s)
    if models is None:
        models = complete_models(s)
        if not models:
            raise LmmapError("no model in the store is scored on every text: score or import models first")
    return ModelMap.from_store(s, models=models, clip=not no_clip, allow_mixed=allow_mixed)


# ----------------------------------------------------------------------------- lmmap errors


def write_error_report(result, out: Path, elapsed: float | None = None, table: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write the CSV tables, Figure 2 (PNG and HTML) and a JSON summary of an :class:`~lmmap.analyses.errors.ErrorAnalysis`.

    ``table``: Table 1 as already computed by ``result.texts_needed()`` (default: computed here).
    """
    from lmmap.report import plots

    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / k for k in ("errors.csv", "kappa.csv", "table1.csv", "figure2.png", "figure2.html", "errors.json")}
    result.curves().to_csv(paths["errors.csv"], index=False)
    kappa = result.kappa_curve()
    kappa.to_csv(paths["kappa.csv"], index=False)
    table = result.texts_needed() if table is None else table
    table.to_csv(paths["table1.csv"], index=False)
    if result.simulated and result.mode == "both":
        paths["table1_analytic.csv"] = out / "table1_analytic.csv"
        # Its N/A cells are the simulated table's story told again: no second round of notes.
        result.texts_needed(source="analytic", warn=False).to_csv(paths["table1_analytic.csv"], index=False)

    series, styles, colours = {}, {}, {}
    for m in result.methods:
        label = METHOD_LABELS[m]
        if result.simulated:
            series[label] = (result.d_mean(m, "simulate"), result.sigma_hat(m, "simulate"))
            colours[label] = METHOD_COLOURS[m]
        if result.mode in ("analytic", "both"):
            name = f"{label} (analytic)" if result.simulated else label
            series[name] = (result.d_expected[m], result.sigma_hat(m, "analytic"))
            styles[name] = "--" if result.simulated else "-"
            colours[name] = METHOD_COLOURS[m]
    series["κ̂_d (random sampling of d texts)"] = (kappa["d"].to_numpy(), kappa["kappa_hat"].to_numpy())
    styles["κ̂_d (random sampling of d texts)"] = ":"
    colours["κ̂_d (random sampling of d texts)"] = "black"
    series["√(N/d)·κ̂_N (theory)"] = (kappa["d"].to_numpy(), kappa["kappa_theory"].to_numpy())
    colours["√(N/d)·κ̂_N (theory)"] = "#9e9e9e"
    what = "relative" if result.error == "relative" else "absolute"
    kw = dict(
        xlabel="number of unique texts d",
        ylabel=f"σ̂ (RMS {what} error of g̃ against the population)",
        title=f"K = {result.K} models, N = {result.N} texts, R = {result.R}",
        logx=True, logy=True, styles=styles, colors=colours,
    )  # fmt: skip
    plots.lines_png(paths["figure2.png"], series, **kw)
    plots.lines_html(paths["figure2.html"], series, **kw)

    summary = {
        "K": result.K, "N": result.N, "R": result.R, "error": result.error, "eps0": result.eps0,
        "mode": result.mode, "methods": list(result.methods), "n_grid": result.n_grid.tolist(),
        "targets": result.targets.tolist(), "targets_not_below_N": np.asarray(result.dropped_targets).tolist(),
        "kappa_source": result.kappa_source, "seed": result.seed,
        "tau_unif_N": float(np.sqrt(result.tau2_unif_N())),
        "tau_unif_N_analytic": float(np.sqrt(result.tau2_unif_N("analytic"))),
        "gram_precision": result.precision, "float32_rounding_error_in_e": result.float32_error,
        "d_prime_ratio_to_uniform": _ratio_json(result.ratio_to_uniform(table)),
        "seconds": elapsed,
    }  # fmt: skip
    paths["errors.json"].write_text(json.dumps(summary, indent=2))
    return paths


def _ratio_json(ratio: pd.DataFrame) -> dict:
    return {m: {str(int(d)): (None if not np.isfinite(v) else round(float(v), 4)) for d, v in ratio[m].items()} for m in ratio.columns if m != "uniform"}


def _print_table1(table: pd.DataFrame, title: str) -> None:
    t = Table(title=title)
    t.add_column("d")
    targets = sorted(table["d"].unique())
    for d in targets:
        t.add_column(f"{d:,}", justify="right")
    for m, rows in table.groupby("method", sort=False):
        cells = rows.set_index("d")["cell"]
        t.add_row(METHOD_LABELS.get(m, m), *[str(cells.get(d, "")) for d in targets])
    console.print(t)


@app.command()
def errors(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated resampling methods (uniform is always included: τ_unif,N and κ̂ need it).")] = "uniform,ls,kl",
    R: Annotated[int, typer.Option("--R", help="Resampling trials per (method, n).")] = 100,
    n_grid: Annotated[Optional[str], typer.Option("--n-grid", help="Resample sizes, e.g. 10:90:10,100:900:100,1000:10000:1000 (default: 1–9 × each power of ten from 10 up to N, and N: the paper's grid at N = 10,000). N and the Table 1 targets are added.")] = None,
    error: Annotated[str, typer.Option("--error", metavar="relative|absolute", help="e_ij = (g̃−g)/max(g, ε₀) (relative) or (g̃−g)/C (absolute, §4.2).")] = "relative",
    targets: Annotated[Optional[str], typer.Option("--targets", help="Table 1 targets d, comma-separated (default: 5%, 25%, 50%, 75% of N to two digits: the paper's 500,2500,5000,7500 at N = 10,000). Targets not below N are noted and left N/A.")] = None,
    mode: Annotated[str, typer.Option("--mode", metavar="simulate|analytic|both", help="Simulate R trials, use the closed form of Lemma 2 (seconds), or both (default; adds the agreement z-score).")] = "both",
    kappa: Annotated[str, typer.Option("--kappa", metavar="simulated|theory", help="κ̂_d for Table 1: τ_unif,d simulated at n = d, or sqrt(N/d)·κ̂_N.")] = "simulated",
    precision: Annotated[str, typer.Option("--precision", metavar="auto|float32|float64", help="Gram arithmetic of the simulation; auto uses float32 only where its rounding is < 5% of the smallest τ.")] = "auto",
    eps0: Annotated[float, typer.Option("--eps0", help="ε₀ in max(g_ij, ε₀).")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the resampling trials.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Threads to use (-1: all cores).")] = 1,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model that defines the map (repeatable; default: every model scored on all texts).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave this model out (repeatable).")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")] = False,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions.")] = False,
):
    """Sampling and resampling error of the KL estimates: τ, σ̂, κ̂_d against unique texts d (Figure 2) and Table 1."""
    from lmmap.analyses.errors import analyse_errors, check_trials

    method_list = parse_methods(methods)
    grid = parse_int_list(n_grid, "--n-grid")
    target_list = parse_int_list(targets, "--targets")
    check_trials(R)
    check_replicates(R)
    mm = _load_map(store, model, exclude, no_clip, allow_mixed)
    t0 = time.perf_counter()
    with output_dir(output):
        result = analyse_errors(
            mm.Q, methods=method_list, n_grid=grid, R=R, error=error, mode=mode, targets=target_list,
            kappa_source=kappa, eps0=eps0, seed=seed, workers=workers, precision=precision, progress=True,
        )  # fmt: skip
        table = result.texts_needed()
        elapsed = time.perf_counter() - t0
        paths = write_error_report(result, output, elapsed, table)
    source = "simulated" if result.simulated else "analytic (Lemma 2)"
    console.print(
        f"{result.K} models, N = {result.N} texts, {result.error} error, {source}"
        + (f", R = {result.R}, Gram in {result.precision}" if result.simulated else "")
        + f": τ_unif,N = {np.sqrt(result.tau2_unif_N()):.4g}  ({elapsed:.1f} s)"
    )
    _print_table1(table, f"Table 1: unique texts d' to match κ̂_d ({source})")
    for name, p in paths.items():
        console.print(f"  {name:20s} {lit(p)}")


# ----------------------------------------------------------------------------- lmmap stability


def _slug(method: str, n: int) -> str:
    return f"{method}-n{n}"


def write_stability_report(results: dict, names, groups, out: Path, color_by: str | None = None) -> dict[str, Path]:
    """Write Table 3, the per-model CSV, the reference coordinates and one ellipse map per setting."""
    import pandas as pd

    from lmmap.report import plots
    from lmmap.analyses.stability import table3

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    first = next(iter(results.values()))
    paths["reference.csv"] = out / "reference.csv"
    pd.DataFrame({"model": names, "x": first.reference[:, 0], "y": first.reference[:, 1]}).to_csv(paths["reference.csv"], index=False)
    t3 = table3(results)
    paths["table3.csv"] = out / "table3.csv"
    t3.to_csv(paths["table3.csv"], index=False)
    frames = []
    for label, r in results.items():
        df = r.per_model(names)
        df.insert(0, "setting", label)
        frames.append(df)
        slug = _slug(r.method, r.n)
        title = f"{METHOD_LABELS[r.method]} n = {r.n:,} (d ≈ {np.mean(r.d):,.0f}), R = {r.R}: mean positions, 1-sd ellipses"
        hover = [f"Bias² {b:.3g}, Variance {v:.3g}, MSE {m:.3g}" for b, v, m in zip(r.bias2, r.variance, r.mse)]
        png, html = out / f"stability_{slug}.png", out / f"stability_{slug}.html"
        plots.map_png(png, r.mean, names, groups=groups, ellipses=(r.mean, r.cov), title=title, group_title=color_by)
        plots.map_html(html, r.mean, names, groups=groups, hover=hover, ellipses=(r.mean, r.cov), title=title, group_title=color_by)
        paths[png.name], paths[html.name] = png, html
    paths["stability_models.csv"] = out / "stability_models.csv"
    pd.concat(frames, ignore_index=True).to_csv(paths["stability_models.csv"], index=False)
    return paths


@app.command()
def stability(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    method: Annotated[str, typer.Option("--method", metavar="uniform|ls|kl", help="Resampling method.")] = "ls",
    n: Annotated[Optional[int], typer.Option("--n", help="Texts drawn with replacement per map (default: 29% of N, the paper's 2,900 of 10,000).")] = None,
    R: Annotated[int, typer.Option("--R", help="Resampled maps per setting.")] = 100,
    compare: Annotated[Optional[list[str]], typer.Option("--compare", metavar="METHOD:N", help="Another setting to compare, e.g. uniform:10000 (repeatable).")] = None,
    embedding: Annotated[str, typer.Option("--embedding", metavar="auto|mds|tsne|pca|umap", help="2-D embedding: auto (as `lmmap map`: classical MDS below 40 models, t-SNE from 40 on), mds, tsne (PCA initialisation), pca or umap.")] = "auto",
    random_state: Annotated[int, typer.Option("--random-state", help="Fixed random state of every embedding (the paper: 42).")] = 42,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the resampling.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes for the R embeddings (-1: all cores).")] = 1,
    color_by: Annotated[str, typer.Option("--color-by", help="Metadata column that colours the maps.")] = "model_type",
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model that defines the map (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave this model out (repeatable).")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")] = False,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions.")] = False,
):
    """Stability of the map under resampling: R maps aligned by Procrustes, ellipses, Bias²/Variance/MSE (Table 3)."""
    from lmmap.analyses.errors import check_trials, check_workers
    from lmmap.maths.resampling import check_method, check_sample_size, default_resample_size, note_if_no_real_subset
    from lmmap.analyses.stability import map_stability, reference_map, table3

    method = check_method(method)
    if n is not None:
        check_sample_size(n)
    compared = [parse_setting(c) for c in compare or []]
    check_workers(workers)
    check_trials(R)
    check_replicates(R)
    mm = _load_map(store, model, exclude, no_clip, allow_mixed)
    check_color_by(color_by, [] if mm.metadata is None else mm.metadata.columns)
    N = int(mm.Q.shape[1])
    settings = list(dict.fromkeys([(method, default_resample_size(N) if n is None else n)] + compared))
    for m, n_s in settings:
        note_if_no_real_subset(mm.Q, m, n_s, per_map=True)
    with output_dir(output):
        with console.status(f"reference map of {mm.K} models on all {mm.Q.shape[1]} texts ({lit(embedding)})…"):
            reference = reference_map(mm.Q, embedding, random_state)
        results = {}
        for m, n_s in settings:
            results[f"{m} n={n_s}"] = map_stability(
                mm.L, m, n_s, R, threshold=mm.threshold, Q=mm.Q, reference=reference, embedding=embedding,
                random_state=random_state, seed=seed, workers=workers, progress=True,
            )  # fmt: skip
        groups = mm.groups(color_by)
        paths = write_stability_report(results, mm.names, groups, output, color_by if groups is not None else None)
        atomic_write(output / "stability.json", json.dumps({
            "K": mm.K, "N": int(mm.Q.shape[1]), "R": R, "embedding": embedding, "random_state": random_state,
            "seed": seed, "clip_threshold": mm.threshold, "settings": [{"method": m, "n": n_s} for m, n_s in settings],
        }, indent=2))  # fmt: skip
    t3 = table3(results)
    t = Table(title=f"Table 3: medians over {mm.K} models (R = {R})")
    t.add_column("")
    for row in t3.itertuples():
        t.add_column(f"{METHOD_LABELS[row.method]} n={row.n:,}\nd = {row.d_mean:,.0f}", justify="right")
    for key, label in (("bias2", "Bias²"), ("variance", "Variance"), ("mse", "MSE")):
        t.add_row(label, *[f"{v:.3g}" for v in t3[key]])
    console.print(t)
    for name, p in paths.items():
        console.print(f"  {name:30s} {lit(p)}")
