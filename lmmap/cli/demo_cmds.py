"""``lmmap demo``: build a small ecosystem of real models offline, score them and draw their map."""

from __future__ import annotations

from lmmap.cli._app import app, console, err_console, lit
from lmmap.cli._options import option


@app.command()
def demo(
    output: option("demo_output"),
    size: option("size"),
    force: option("force"),
    seed: option("random_state"),
    threads: option("threads"),
    executor: option("executor"),
    ray_address: option("ray_address"),
    gpus_per_model: option("gpus_per_model"),
    shard_texts: option("shard_texts"),
):
    """Build a small ecosystem of real models from text on this machine, score them and draw their map (offline)."""
    from lmmap.cli._progress import RichProgress
    from lmmap.demo import run_demo
    from lmmap.parallel import resolve_threads

    resolve_threads(threads)  # a bad value fails before any work
    with RichProgress(err_console) as progress:
        result = run_demo(output, size=size, force=force, random_state=seed, progress=progress, threads=threads,
                          executor=executor, ray_address=ray_address, gpus_per_model=gpus_per_model,
                          shard_texts=shard_texts)
    _print_summary(result)
    console.print(f"[bold]demo map of {result['n_models']} models on {result['n_texts']} texts[/] "
                  f"({result['seconds']:.0f} s on this machine, {result['cpu_seconds']:.0f} s of CPU, "
                  f"{result['threads']} torch thread(s)):")
    for label, p in result["paths"].items():
        console.print(f"  {label:14s} {lit(p)}")
    console.print(f"  {'models.csv':14s} {lit(result['models_csv'])}")
    console.print(f"  {'scores.csv':14s} {lit(result['scores_csv'])}")
    lens = result.get("lens")
    if lens:
        paths = lens["paths"]
        console.print(f"logit lens of base (its layers as models, in {lit(lens['store'])}):")
        for label in ("layers.png", "layers.html", "lens-map.png", "lens-map.html"):
            if label in paths:
                console.print(f"  {label:14s} {lit(paths[label])}")
    if result["held_out"]:
        console.print(f"held out of the store for `lmmap add`: {lit(', '.join(result['held_out']))}")
    console.print("the README's session on this demo (outputs go to ./session/):", highlight=False)
    for line in result["session"]:
        console.print(f"  {lit(line)}", highlight=False, soft_wrap=True)


def _print_summary(result: dict) -> None:
    """The story the demo map tells: fine-tunes stay near their base, far from models trained from scratch."""
    from rich.table import Table

    check, summary = result["finetune_check"], result["kl_summary"]
    # The unit in the title, not in each KL column: the table must still fit an 80-column terminal.
    t = Table(title="fine-tunes stay near their base (estimated KL, nats/text)", title_justify="left")
    for col in ("fine-tune", "KL to base", "nearest from-scratch model", "its KL", "ratio"):
        t.add_column(col, justify="right" if col in ("KL to base", "its KL", "ratio") else "left")
    for r in check:
        t.add_row(lit(r["finetune"]), f"{r['kl_to_base']:.0f}", lit(str(r["nearest_scratch"])),
                  f"{r['kl_to_scratch']:.0f}", f"{r['kl_to_scratch'] / r['kl_to_base']:.1f}×")
    err_console.print(t)
    if summary:
        err_console.print(
            f"each fine-tune's KL to its base: {summary['kl_to_base_min']:.0f}–{summary['kl_to_base_max']:.0f} nats/text, "
            f"{summary['ratio_min']:.1f}–{summary['ratio_max']:.1f}× smaller than to the nearest from-scratch model",
            highlight=False, markup=False,
        )
    err_console.print("nearest neighbour of each model: "
                      + ", ".join(f"{a}→{b}" for a, b in result["nearest"].items()), highlight=False, markup=False)
