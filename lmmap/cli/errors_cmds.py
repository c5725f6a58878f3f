"""Error analysis commands: ``lmmap errors`` (SPEC §5) and ``lmmap stability`` (SPEC §6).

Each command parses its options, loads the map (:meth:`lmmap.map.ModelMap.from_store`),
calls the analysis (:func:`lmmap.analyses.errors.analyse_errors`,
:func:`lmmap.analyses.stability.compare_stability`), writes the result with
:func:`lmmap.report.write` and prints a summary.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from lmmap.cli._app import app, check_color_by, console, output_dir, print_files, sig
from lmmap.cli._options import option
from lmmap.cli.map_cmds import load_map
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
        raise InputError("--methods is empty: give e.g. uniform,ls,kl", params=("methods",))
    return methods


def parse_setting(text: str) -> tuple[str, int]:
    """``"uniform:10000"`` → ("uniform", 10000)."""
    from lmmap.maths.resampling import check_method, check_sample_size

    m = re.fullmatch(r"\s*([A-Za-z]+)\s*[:=]\s*([0-9_]+)\s*", str(text))
    if not m:
        raise InputError(f"--compare {text!r}: write METHOD:N, e.g. uniform:10000", params=("compare",))
    try:
        n = check_sample_size(int(m.group(2).replace("_", "")))
    except InputError as exc:
        raise InputError(f"--compare {text!r}: {exc}", params=("compare",)) from None
    return check_method(m.group(1)), n


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
    output: option("output"),
    store: option("store"),
    methods: option("methods"),
    R: option("R"),
    n_grid: option("n_grid"),
    error: option("error"),
    targets: option("targets"),
    mode: option("mode"),
    kappa: option("kappa_source"),
    precision: option("precision"),
    eps0: option("eps0"),
    seed: option("random_state"),
    workers: option("workers"),
    model: option("model"),
    exclude: option("exclude"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
):
    """Sampling and resampling error of the KL estimates: τ, σ̂, κ̂_d against unique texts d (Figure 2) and Table 1."""
    import numpy as np

    from lmmap import report
    from lmmap.analyses.errors import analyse_errors
    from lmmap.cli._progress import RichProgress
    from lmmap.maths.errors import check_n_grid
    from lmmap.parallel import check_workers

    method_list = parse_methods(methods)
    grid = parse_int_list(n_grid, "--n-grid")
    target_list = parse_int_list(targets, "--targets")
    for values, flag in ((grid, "n_grid"), (target_list, "targets")):
        if values is not None:
            check_n_grid(values, flag)
    check_workers(workers)  # its upper bound is this machine's (the spec holds only the lower one)
    mm = load_map(store, None, no_clip, allow_mixed, models=model, exclude=exclude)
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
    output: option("output"),
    store: option("store"),
    method: option("stability_method"),
    n: option("stability_n"),
    R: option("R"),
    compare: option("compare"),
    embedding: option("embedding"),
    tsne_seed: option("embedding_random_state"),
    seed: option("random_state"),
    workers: option("workers"),
    color_by: option("color_by"),
    metadata: option("metadata"),
    model: option("model"),
    exclude: option("exclude"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
):
    """Stability of the map under resampling: R maps aligned by Procrustes, ellipses, Bias²/Variance/MSE (Table 3)."""
    from lmmap import report
    from lmmap.analyses.stability import compare_stability
    from lmmap.cli._progress import RichProgress
    from lmmap.maths.resampling import check_method
    from lmmap.parallel import check_workers

    method = check_method(method)
    compared = [parse_setting(c) for c in compare or []]
    check_workers(workers)  # its upper bound is this machine's (the spec holds only the lower one)
    mm = load_map(store, None, no_clip, allow_mixed, metadata, models=model, exclude=exclude)
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
