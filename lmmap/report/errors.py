"""Files of an error analysis (:class:`lmmap.analyses.errors.ErrorAnalysis`): Figure 2 and Table 1.

``errors.csv`` (one row per method and n: d, τ, σ̂, simulated and analytic,
and their agreement z), ``kappa.csv`` (``κ̂_d`` and ``sqrt(N/d)·κ̂_N``),
``table1.csv`` (unique texts d' to match ``κ̂_d``; with mode ``both`` also
``table1_analytic.csv``), ``figure2.png``/``figure2.html`` (the error of the
estimated KL, σ̂, against the texts scored d, log–log) and ``errors.json``
(parameters, τ_unif,N, d' ratios to uniform, provenance).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files

METHOD_COLOURS = {"uniform": "#1f77b4", "ls": "#d62728", "kl": "#2ca02c"}
METHOD_LABELS = {"uniform": "Uniform", "ls": "LS", "kl": "KL"}
KAPPA_LABEL = "κ̂_d (random sampling of d texts)"
THEORY_LABEL = "√(N/d)·κ̂_N (theory)"


def _ratio_json(ratio) -> dict:
    return {m: {str(int(d)): (None if not np.isfinite(v) else round(float(v), 4)) for d, v in ratio[m].items()}
            for m in ratio.columns if m != "uniform"}


def figure2_series(result, kappa) -> tuple[dict, dict, dict]:
    """Figure 2's ``(series, styles, colours)``: σ̂ against d per method (simulated solid, analytic dashed) and κ̂_d."""
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
    series[KAPPA_LABEL] = (kappa["d"].to_numpy(), kappa["kappa_hat"].to_numpy())
    styles[KAPPA_LABEL] = ":"
    colours[KAPPA_LABEL] = "black"
    series[THEORY_LABEL] = (kappa["d"].to_numpy(), kappa["kappa_theory"].to_numpy())
    colours[THEORY_LABEL] = "#9e9e9e"
    return series, styles, colours


def figure2_ylabel(error: str) -> str:
    """Figure 2's y-label: what is plotted in words, its unit, and the paper's symbol last."""
    if error == "relative":
        return "error of the estimated KL, relative to the true KL\n(RMS over model pairs, no unit; σ̂)"
    return "error of the estimated KL, relative to the typical KL\n(RMS error / RMS KL over model pairs, no unit; σ̂)"


def write(result, outdir: str | os.PathLike, *, table=None, text_set_id: str | None = None) -> dict[str, Path]:
    """Write the tables, Figure 2 (PNG and HTML) and ``errors.json`` of ``result``; returns ``{name: path}``.

    ``table``: Table 1 as already computed by ``result.texts_needed()`` (default:
    computed here, with its notes). ``text_set_id``: the text set's identity, for the JSON's
    provenance block.
    """
    from lmmap.report import plots

    files = Files(outdir)
    files.table("errors.csv", result.curves())
    kappa = result.kappa_curve()
    files.table("kappa.csv", kappa)
    table = result.texts_needed() if table is None else table
    files.table("table1.csv", table)
    if result.simulated and result.mode == "both":
        # Its N/A cells are the simulated table's story told again: no second round of notes.
        files.table("table1_analytic.csv", result.texts_needed(source="analytic", warn=False))

    series, styles, colours = figure2_series(result, kappa)
    kw = dict(
        xlabel="texts scored: unique texts d in the subset (log scale)",
        ylabel=figure2_ylabel(result.error),
        title=(f"Error of the KL estimates against the number of texts scored\n"
               f"K = {result.K} models, N = {result.N:,} texts, R = {result.R} draws per point"),
        logx=True, logy=True, styles=styles, colors=colours,
    )  # fmt: skip
    files.figure("figure2", lambda p: plots.lines_png(p, series, **kw), lambda p: plots.lines_html(p, series, **kw))

    files.json("errors.json", {
        "K": result.K, "N": result.N, "R": result.R, "error": result.error, "eps0": result.eps0,
        "mode": result.mode, "methods": list(result.methods), "n_grid": result.n_grid.tolist(),
        "targets": result.targets.tolist(), "targets_not_below_N": np.asarray(result.dropped_targets).tolist(),
        "kappa_source": result.kappa_source, "seed": result.random_state,
        "tau_unif_N": float(np.sqrt(result.tau2_unif_N())),
        "tau_unif_N_analytic": float(np.sqrt(result.tau2_unif_N("analytic"))),
        "gram_precision": result.precision, "float32_rounding_error_in_e": result.float32_error,
        "d_prime_ratio_to_uniform": _ratio_json(result.ratio_to_uniform(table)),
        "seconds": result.seconds,
    }, **({} if text_set_id is None else {"text_set_id": text_set_id}))  # fmt: skip
    return files.paths


__all__ = ["METHOD_COLOURS", "METHOD_LABELS", "figure2_series", "figure2_ylabel", "write"]
