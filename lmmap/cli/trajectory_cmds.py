"""Training trajectories: `lmmap trajectory NAME` (KL along a run's checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmmap.cli._app import AllowOtherTextsOption, StoreOption, app, console, lit, output_dir
from lmmap.cli.map_cmds import load_map


@app.command("trajectory")
def trajectory_(
    name: Annotated[str, typer.Argument(help="The trajectory: models whose metadata column trajectory has this value, ordered by the column step.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    unit: Annotated[str, typer.Option("--unit", metavar="nats-per-text|bits-per-byte", help="Unit of KL.")] = "nats-per-text",
    log: Annotated[bool, typer.Option("--log", help="Draw step and KL on log axes.")] = False,
    subset: Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: map from its texts only.")] = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="MODELS.csv with extra metadata columns (trajectory, step).")] = None,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="Do not clip low log-likelihoods.")] = False,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Allow models scored under different conventions in one map.")] = False,
    allow_other_texts: AllowOtherTextsOption = False,
):
    """KL between consecutive checkpoints of a training trajectory and from each to the final model."""
    from lmmap.map import check_unit

    check_unit(unit)  # a unit typo is refused before the store is read
    from lmmap import report
    from lmmap.analyses.trajectory import trajectory
    from lmmap.data.store import Store

    mm = load_map(Store(store), subset, no_clip, allow_mixed, metadata, allow_other_texts)
    result = trajectory(mm, name, unit=unit)
    with output_dir(output):
        paths = report.write(result, output, log_axes=log)
    console.print(f"trajectory {lit(name)}: {len(result.table)} checkpoints, final {lit(result.final)} "
                  f"(KL in {lit(result.unit_label)}):")
    for r in result.table.itertuples(index=False):
        prev = "" if r.kl_to_previous != r.kl_to_previous else f"{r.kl_to_previous:.4g}"
        console.print(f"  step {r.step!s:>10}  {lit(r.model):24s} to previous {prev:>10}  to final {r.kl_to_final:.4g}")
    for fname, p in paths.items():
        console.print(f"  {fname:16s} {lit(p)}")
