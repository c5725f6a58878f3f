"""Which model came from which: `lmmap lineage` (every model) and `lmmap provenance A B` (one pair)."""

from __future__ import annotations

from typing import Annotated

import typer

from lmmap.cli._app import app, check_model, console, lit, output_dir, print_files
from lmmap.cli._options import option
from lmmap.cli.map_cmds import load_map


@app.command("lineage")
def lineage_(
    output: option("output"),
    store: option("store"),
    alpha: option("alpha"),
    rank: option("lineage_rank"),
    subset: option("subset"),
    metadata: option("metadata"),
    no_clip: option("no_clip"),
    seed: option("random_state"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
):
    """For every model: its most likely parent, a statistic, a p-value against 'unrelated' and a decision."""
    from lmmap import report
    from lmmap.analyses.lineage import lineage
    from lmmap.data.store import Store

    mm = load_map(Store(store), subset, no_clip, allow_mixed, metadata, allow_other_texts)
    with console.status(f"testing the pairs of {mm.K} models…"):
        result = lineage(mm, alpha=alpha, rank=rank, random_state=seed)
    with output_dir(output):
        paths = report.write(result, output)
    t = result.table
    counts = t["decision"].value_counts()
    console.print(f"lineage of {mm.K} models ({result.info['rank']} principal directions removed, null from "
                  f"{result.info['null']['source']}, α = {alpha:g}, Holm within each model): "
                  + ", ".join(f"{counts.get(d, 0)} {d}" for d in ("derived", "independent", "undecided")))
    for row in t[t["decision"] == "derived"].itertuples(index=False):
        extra = f" and {lit(row.parent2)}" if row.parent2 else ""
        note = f"  [declared {lit(row.declared_base)}: {row.agreement}]" if row.declared_base else ""
        console.print(f"  {lit(row.model)} ← {lit(row.parent)}{extra}  (statistic {row.statistic:.1f}, "
                      f"p {row.p_adjusted:.2g}, {row.direction}){note}")
    print_files(paths)


@app.command()
def provenance(
    a: Annotated[str, typer.Argument(help="A model in the store.")],
    b: Annotated[str, typer.Argument(help="Another model in the store.")],
    store: option("store"),
    alpha: option("alpha"),
    rank: option("lineage_rank"),
    subset: option("subset"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
):
    """The lineage test for one pair: statistic, p-value, a one-line reading and the texts behind it."""
    from lmmap.analyses.lineage import provenance as prov
    from lmmap.data.store import Store

    s = Store(store)
    names = s.model_names()
    check_model(a, names)
    check_model(b, names)
    mm = load_map(s, subset, no_clip, allow_mixed, allow_other_texts=allow_other_texts)
    r = prov(mm, a, b, alpha=alpha, rank=rank)
    console.print(f"{lit(a)} ↔ {lit(b)}: residual correlation {r.rho:.3f}, statistic {r.statistic:.1f} null sds, "
                  f"p {r.p_value:.2g} ({r.p_adjusted:.2g} corrected)")
    console.print(lit(r.reading))
    console.print(f"texts carrying the evidence (positions in the map's texts; {r.info['top_share']:.0%} of the "
                  "positive evidence): " + ", ".join(str(int(x)) for x in r.texts["position"]))
