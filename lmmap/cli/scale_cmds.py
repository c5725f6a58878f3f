"""The KL scale: `lmmap scale` (reference points of KL from the store's metadata)."""

from __future__ import annotations


from lmmap.cli._app import app, console, fixed, lit, output_dir, print_files, shared_decimals
from lmmap.cli._options import option
from lmmap.cli.map_cmds import load_map


@app.command("scale")
def scale_(
    output: option("output"),
    store: option("store"),
    unit: option("unit"),
    subset: option("subset"),
    metadata: option("metadata"),
    no_clip: option("no_clip"),
    allow_mixed: option("allow_mixed"),
    allow_other_texts: option("allow_other_texts"),
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
