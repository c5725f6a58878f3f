"""``lmmap predict``: benchmark scores from model coordinates, contamination candidates, scores for unscored models.

Parse the options, call :func:`lmmap.analyses.predict.predict_store`, write
the result with :func:`lmmap.report.write`, print a summary.
"""

from __future__ import annotations

import math
from rich.table import Table

from lmmap.exceptions import InputError
from lmmap.cli._app import app, console, fixed, lit, output_dir, shared_decimals, sig
from lmmap.cli._options import option


def parse_score_range(text: str) -> tuple[float, float] | None:
    """``"0,100"`` → (0.0, 100.0); ``"none"`` → None (no range check, no clipping)."""
    if str(text).strip().lower() in ("none", "off", ""):
        return None
    parts = str(text).replace(":", ",").split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--score-range {text!r}: write LO,HI (e.g. 0,100) or none", params=("score_range",)) from None
    if not lo < hi:
        raise InputError(f"--score-range {text!r}: LO must be below HI", params=("score_range",))
    return lo, hi


def parse_targets(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise InputError("--targets is empty: give benchmark column names separated by commas", params=("score_targets",))
    return names


@app.command()
def predict(
    output: option("output"),
    store: option("store"),
    scores: option("scores"),
    group_by: option("group_by"),
    subset: option("subset"),
    seeds: option("n_repeats"),
    seed: option("random_state"),
    folds: option("n_folds"),
    inner_folds: option("n_inner"),
    threshold: option("threshold"),
    level: option("level"),
    targets: option("score_targets"),
    no_mean: option("no_mean"),
    no_loglik: option("no_loglik"),
    score_range: option("score_range"),
    metadata: option("metadata"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
    no_plots: option("no_plots"),
    workers: option("workers"),
):
    """Predict benchmark scores from the models' coordinates (grouped cross-validation), flag possible contamination, and predict unscored models."""
    from lmmap import report
    from lmmap.analyses.predict import predict_store
    from lmmap.cli._progress import RichProgress
    from lmmap.data.store import Store

    s = Store(store)
    with output_dir(output):
        with RichProgress(console, enabled=console.is_terminal) as progress:
            result = predict_store(
                s, scores, subset=subset, group_by=group_by, metadata=metadata, clip=not no_clip,
                allow_mixed=allow_mixed, include_loglik=not no_loglik, n_repeats=seeds, random_state=seed,
                n_folds=folds, n_inner=inner_folds, threshold=threshold, level=level, targets=parse_targets(targets),
                include_mean=not no_mean, score_range=parse_score_range(score_range), workers=workers,
                progress=progress,
            )
        paths = report.write(result, output, plots=not no_plots)
    _print_report(result)
    console.print(f"wrote {len(paths)} files to {lit(output)}:")
    for name in ("correlations.csv", "predictions.csv", "contamination.csv", "new_predictions.csv", "predict.json"):
        console.print(f"  {name:20s} {lit(paths[name])}")
    n_fig = sum(1 for name in paths if name.startswith("pred_"))
    if n_fig:
        console.print(f"  {'pred_*.png/.html':20s} {n_fig} figures")


def _print_report(result) -> None:
    st = result.settings
    grouping = f"grouped by {lit(st['group_by'])}" if st["group_by"] else "each model its own group"
    table = Table(title=f"Pearson r, {st['n_folds']}-fold CV ({grouping}), mean ± sd over {len(st['seeds'])} seeds")
    for col, just in (("target", "left"), ("models", "right"), ("groups", "right"), ("missing", "right"), ("r", "right"), ("RMSE", "right"), ("α", "right")):
        table.add_column(col, justify=just)
    for row in result.summary.itertuples(index=False):
        r = "n/a" if not math.isfinite(row.r_mean) else f"{row.r_mean:.3f} ± {row.r_sd:.3f}"
        table.add_row(lit(row.target), str(row.n_models), str(row.n_groups), str(row.n_missing), r, sig(row.rmse), f"{row.alpha:.0e}")
    console.print(table)
    # result.notes reached the user as warnings (one `note:` line each) while the report was built.
    flagged = result.flagged()
    if len(flagged):
        console.print(f"{len(flagged)} possible contamination case(s) (true − predicted > {st['threshold']:g} residual sd):")
        for row in flagged.head(10).itertuples(index=False):
            d = shared_decimals([row.true, row.predicted, row.residual])  # one score's three numbers, alike
            console.print(f"  {lit(row.target)}: {lit(row.model)}  true {fixed(row.true, d)}, predicted "
                          f"{fixed(row.predicted, d)}, residual {'+' if row.residual >= 0 else ''}{fixed(row.residual, d)} "
                          f"({row.z:+.1f} sd)", highlight=False)
        if len(flagged) > 10:
            console.print(f"  … {len(flagged) - 10} more in contamination.csv")
    else:
        console.print(f"no model exceeds its prediction by more than {st['threshold']:g} residual sd")
    if len(result.new):
        console.print(f"{result.new['model'].nunique()} model(s) without scores predicted ({len(result.new)} values, {st['level']:.0%} intervals) → new_predictions.csv")
