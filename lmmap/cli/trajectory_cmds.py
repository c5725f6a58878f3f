"""Paths through the map: `lmmap trajectory NAME` (a run's checkpoints), `lmmap layers MODEL` (logit lens)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmmap.cli._app import app, console, fixed, lit, output_dir, print_files, shared_decimals
from lmmap.cli._options import option
from lmmap.cli.map_cmds import load_map


@app.command("trajectory")
def trajectory_(
    name: Annotated[str, typer.Argument(help="The trajectory: models whose metadata column trajectory has this value, ordered by the column step.")],
    output: option("output"),
    store: option("store"),
    unit: option("unit"),
    log: option("log"),
    subset: option("subset"),
    metadata: option("metadata"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
):
    """KL between consecutive checkpoints of a training trajectory and from each to the final model."""
    from lmmap.map import check_unit

    check_unit(unit)  # a unit typo is refused before the store is read
    from lmmap.analyses.trajectory import trajectory
    from lmmap.data.store import Store

    mm = load_map(Store(store), subset, no_clip, allow_mixed, metadata, allow_other_texts)
    _write_and_print(trajectory(mm, name, unit=unit), output, log)


@app.command("layers")
def layers_(
    model: Annotated[str, typer.Argument(help="A model scored with `lmmap score MODEL --layers ...` (its layers are stored as MODEL@layerK).")],
    output: option("output"),
    store: option("store"),
    unit: option("unit"),
    log: option("log"),
    subset: option("subset"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
):
    """KL between consecutive layers of a model (logit lens) and from each layer to the model's output."""
    from lmmap.map import check_unit

    check_unit(unit)
    from lmmap.analyses.trajectory import layers
    from lmmap.data.store import Store

    mm = load_map(Store(store), subset, no_clip, allow_mixed, None, allow_other_texts)
    _write_and_print(layers(mm, model, unit=unit), output, log)


def _write_and_print(result, output: Path, log: bool) -> None:
    from lmmap import report

    with output_dir(output):
        paths = report.write(result, output, log_axes=log)
    what = "trajectory" if result.kind == "trajectory" else "layers of"
    console.print(f"{what} {lit(result.name)}: {len(result.table)} {result.point}s, final {lit(result.final)} "
                  f"(KL in {lit(result.unit_label)}):")
    order = result.order_column
    rows = result.table.to_dict("records")
    dec = shared_decimals([r["kl_to_previous"] for r in rows], [r["kl_to_final"] for r in rows])
    for r in rows:
        prev = "" if r["kl_to_previous"] != r["kl_to_previous"] else fixed(r["kl_to_previous"], dec)
        console.print(f"  {order} {r[order]!s:>10}  {lit(r['model']):24s} to previous {prev:>10}  "
                      f"to final {fixed(r['kl_to_final'], dec):>10}")
    print_files(paths)
