"""The KL scale: `lmmap scale` (reference points of KL from the store's metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmmap.cli._app import AllowOtherTextsOption, StoreOption, app, console, lit, output_dir
from lmmap.cli.map_cmds import AllowMixedOption, NoClipOption, SubsetOption, load_map


@app.command("scale")
def scale_(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    unit: Annotated[str, typer.Option("--unit", metavar="nats-per-text|bits-per-byte", help="Unit of KL (default bits-per-byte: comparable across text sets).")] = "bits-per-byte",
    subset: SubsetOption = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="MODELS.csv with extra metadata columns (base_model, model_type, family, quantization).")] = None,
    no_clip: NoClipOption = False,
    allow_mixed: AllowMixedOption = False,
    allow_other_texts: AllowOtherTextsOption = False,
):
    """KL on a readable scale: the median KL of fine-tunes, checkpoints, quantised models and unrelated families."""
    from lmmap.map import check_unit

    check_unit(unit)
    from lmmap import report
    from lmmap.analyses.scale import scale
    from lmmap.data.store import Store

    mm = load_map(Store(store), subset, no_clip, allow_mixed, metadata, allow_other_texts)
    result = scale(mm, unit=unit)
    with output_dir(output):
        paths = report.write(result, output)
    console.print(f"KL scale of {mm.K} models ({lit(result.unit_label)}):")
    for r in result.references.itertuples(index=False):
        console.print(f"  {lit(r.relation):24s} median {r.median:.4g}  (n={r.n_pairs}, {r.q25:.3g}–{r.q75:.3g})")
    for name, p in paths.items():
        console.print(f"  {name:14s} {lit(p)}")
