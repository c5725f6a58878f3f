"""The KL scale: `lmmap scale` (reference points of KL from the store's metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmmap.cli._app import AllowOtherTextsOption, StoreOption, app, console, fixed, lit, output_dir, print_files, shared_decimals
from lmmap.cli.map_cmds import AllowMixedOption, NoClipOption, SubsetOption, UnitOption, load_map


@app.command("scale")
def scale_(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    store: StoreOption,
    unit: UnitOption = "nats-per-text",
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
    refs = result.references
    console.print(f"KL scale of {mm.K} models ({lit(result.unit_label)}; median and interquartile range of each kind "
                  "of pair):")
    dec = shared_decimals(refs["median"], refs["q25"], refs["q75"])
    medians = [fixed(v, dec) for v in refs["median"]]
    iqrs = [f"[IQR {fixed(a, dec)}–{fixed(b, dec)}]" for a, b in zip(refs["q25"], refs["q75"])]
    wm, wi = max(map(len, medians), default=0), max(map(len, iqrs), default=0)
    for r, med, iqr in zip(refs.itertuples(index=False), medians, iqrs):
        console.print(f"  {lit(r.relation):24s} median {med:>{wm}}  {iqr:{wi}}  {r.n_pairs} pair(s)")
    print_files(paths)
