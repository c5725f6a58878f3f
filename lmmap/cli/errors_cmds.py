"""Error analysis commands: ``lmmap errors`` (SPEC §5) and ``lmmap stability`` (SPEC §6).

Each command parses its options, loads the map (:meth:`lmmap.map.ModelMap.from_store`),
calls the analysis (:func:`lmmap.analyses.errors.analyse_errors`,
:func:`lmmap.analyses.stability.compare_stability`), writes the result with
:func:`lmmap.report.write` and prints a summary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from lmmap.cli._app import (StoreOption, app, check_color_by, check_embedding, check_replicates, console, lit, output_dir,
                            print_files, sig)
from lmmap.exceptions import InputError

if TYPE_CHECKING:  # annotations only: the heavy modules load when a command runs
    import pandas as pd

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
    from lmmap.maths.errors import MAX_GRID_SIZES

    out: list[int] = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        nums = [_positive_int(p) for p in item.split(":")]
        if None in nums or len(nums) not in (1, 3):
            raise InputError(f"{what}: {item!r} is not a positive integer or a start:stop:step range (e.g. 10:90:10)")
        if len(nums) == 1:
            out.append(nums[0])
        else:
            start, stop, step = nums
            if stop < start:
                raise InputError(f"{what}: range {item!r} ends before it starts")
            sizes = range(start, stop + 1, step)
            # Counted before it is expanded: 1:10**12:1 would fill the memory before any check saw it.
            if len(out) + len(sizes) > MAX_GRID_SIZES:
                raise InputError(f"{what}: {item!r} gives {len(sizes):,} values; give at most "
                                 f"{MAX_GRID_SIZES:,} in all (a coarser step)")
            out.extend(sizes)
    if not out:
        raise InputError(f"{what} is empty")
    return out


def parse_methods(text: str) -> list[str]:
    from lmmap.maths.resampling import check_method

    methods = [check_method(m.strip()) for m in str(text).split(",") if m.strip()]
    if not methods:
        raise InputError("--methods is empty: give e.g. uniform,ls,kl")
    return methods


def parse_setting(text: str) -> tuple[str, int]:
    """``"uniform:10000"`` → ("uniform", 10000)."""
    from lmmap.maths.resampling import check_method, check_sample_size

    m = re.fullmatch(r"\s*([A-Za-z]+)\s*[:=]\s*([0-9_]+)\s*", str(text))
    if not m:
        raise InputError(f"--compare {text!r}: write METHOD:N, e.g. uniform:10000")
    try:
        n = check_sample_size(int(m.group(2).replace("_", "")))
    except InputError as exc:
        raise InputError(f"--compare {text!r}: {exc}") from None
    return check_method(m.group(1)), n


def _load_map(store: Path, model, exclude, no_clip: bool, allow_mixed: bool):
    from lmmap.cli.resample_cmds import _model_list
    from lmmap.data.store import Store
    from lmmap.map import ModelMap

    s = Store(store)
    # models=None: every model scored on all texts (ModelMap.from_store's one rule).
    return ModelMap.from_store(s, models=_model_list(model, exclude, s), clip=not no_clip, allow_mixed=allow_mixed)


# ----------------------------------------------------------------------------- lmmap errors


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
    kappa: Annotated[str, typer.Option("--kappa", "--kappa-source", metavar="simulated|theory", help="κ̂_d for Table 1: τ_unif,d simulated at n = d, or sqrt(N/d)·κ̂_N.")] = "simulated",
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
    import numpy as np

    from lmmap import report
    from lmmap.analyses.errors import analyse_errors
    from lmmap.cli._progress import RichProgress
    from lmmap.maths.errors import check_eps0, check_n_grid
    from lmmap.maths.randomness import check_seed
    from lmmap.parallel import check_workers

    method_list = parse_methods(methods)
    grid = parse_int_list(n_grid, "--n-grid")
    target_list = parse_int_list(targets, "--targets")
    for values, flag in ((grid, "n_grid"), (target_list, "targets")):
        if values is not None:
            check_n_grid(values, flag)
    check_replicates(R)
    check_eps0(eps0)
    check_seed(seed)
    check_workers(workers)
    mm = _load_map(store, model, exclude, no_clip, allow_mixed)
    with output_dir(output):
        with RichProgress(console) as progress:
            result = analyse_errors(
                mm, methods=method_list, n_grid=grid, R=R, error=error, mode=mode, targets=target_list,
                kappa_source=kappa, eps0=eps0, precision=precision, random_state=seed, workers=workers,
                progress=progress,
            )  # fmt: skip
        table = result.texts_needed()
        paths = report.write(result, output, table=table, text_set_id=mm.text_set_id)
    source = "simulated" if result.simulated else "analytic (Lemma 2)"
    # The symbols are the files' column names; the line says what they are (the arithmetic is in errors.json).
    console.print(
        f"{result.K} models, N = {result.N} texts, {result.error} error, {source}"
        + (f" over R = {result.R} trials" if result.simulated else "")
        + f"; error of the KL estimates from all N texts (τ_unif,N): {sig(np.sqrt(result.tau2_unif_N()))}"
        + f" ({result.seconds:.1f} s)"
    )
    _print_table1(table, f"Table 1: unique texts d' needed to match d random texts (κ̂_d), {source}")
    print_files(paths)


# ----------------------------------------------------------------------------- lmmap stability


@app.command()
def stability(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    method: Annotated[str, typer.Option("--method", metavar="uniform|ls|kl", help="Resampling method.")] = "ls",
    n: Annotated[Optional[int], typer.Option("--n", help="Texts drawn with replacement per map (default: 29% of N, the paper's 2,900 of 10,000).")] = None,
    R: Annotated[int, typer.Option("--R", help="Resampled maps per setting.")] = 100,
    compare: Annotated[Optional[list[str]], typer.Option("--compare", metavar="METHOD:N", help="Another setting to compare, e.g. uniform:10000 (repeatable).")] = None,
    embedding: Annotated[str, typer.Option("--embedding", metavar="auto|mds|tsne|pca|umap", help="2-D embedding: auto (as `lmmap map`: classical MDS below 40 models, t-SNE from 40 on), mds, tsne (PCA initialisation), pca or umap.")] = "auto",
    tsne_seed: Annotated[int, typer.Option("--tsne-seed", "--random-state", help="Fixed random state of every embedding (the paper: 42).")] = 42,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the resampling.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes for the R embeddings (-1: all cores).")] = 1,
    color_by: Annotated[str, typer.Option("--color-by", help="Metadata column that colours the maps.")] = "model_type",
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model that defines the map (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave this model out (repeatable).")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")] = False,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions.")] = False,
):
    """Stability of the map under resampling: R maps aligned by Procrustes, ellipses, Bias²/Variance/MSE (Table 3)."""
    from lmmap import report
    from lmmap.analyses.stability import compare_stability
    from lmmap.cli._progress import RichProgress
    from lmmap.maths.randomness import check_seed
    from lmmap.maths.resampling import check_method, check_sample_size
    from lmmap.parallel import check_workers

    method = check_method(method)
    check_embedding(embedding)
    if n is not None:
        try:
            check_sample_size(n)
        except InputError as exc:
            raise InputError(str(exc).replace("the resample size n", "--n")) from None
    compared = [parse_setting(c) for c in compare or []]
    check_workers(workers)
    check_replicates(R)
    check_seed(seed)
    check_seed(tsne_seed, "embedding_random_state")
    mm = _load_map(store, model, exclude, no_clip, allow_mixed)
    check_color_by(color_by, [] if mm.metadata is None else mm.metadata.columns)
    with output_dir(output):
        with RichProgress(console) as progress:
            result = compare_stability(
                mm, [(method, n), *compared], R=R, embedding=embedding, embedding_random_state=tsne_seed,
                random_state=seed, workers=workers, progress=progress,
            )  # fmt: skip
        paths = report.write(result, output, color_by=color_by, text_set_id=mm.text_set_id)
    t3 = result.table3()
    # Positions, not KL: on an MDS map a squared distance is a KL (nats/text); other embeddings have no unit.
    mds = mm.embedding_method(embedding) == "mds"
    t = Table(title=f"Table 3: medians over {mm.K} models (R = {R})")
    t.add_column("nats/text" if mds else "")
    for row in t3.itertuples():
        # A Text, not a str: the console writes a line break inside a string as a visible backslash-n.
        t.add_column(Text(f"{METHOD_LABELS[row.method]} n={row.n:,}\nd = {row.d_mean:,.0f}"), justify="right")
    for key, label in (("bias2", "Bias²"), ("variance", "Variance"), ("mse", "MSE")):
        t.add_row(label, *[sig(v) for v in t3[key]])
    console.print(t)
    print_files(paths)
