"""Store maintenance commands: rm, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from lmmap.cli._app import StoreOption, app, console, lit


@app.command()
def rm(
    models: Annotated[list[str], typer.Argument(help="Names of the models to remove (as `lmmap models` lists them).")],
    store: StoreOption,
):
    """Remove models and their metadata rows from the store (all of them or, if one is not there, none)."""
    from lmmap.data.store import Store

    s = Store(store)
    removed = s.remove_models(models)
    shown = ", ".join(lit(repr(n)) for n in removed[:10]) + (" …" if len(removed) > 10 else "")
    console.print(f"removed {len(removed)} model(s) from {lit(s.path)}: {shown}", highlight=False)


@app.command()
def doctor(
    store: StoreOption,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what is found (roll forward or drop unfinished changes, "
                                                          "remove leftovers, rename old-style files).")] = False,
):
    """Check the store for leftovers of killed processes and damaged files; --repair fixes them."""
    from lmmap.data.store import Store

    s = Store(store, recover=False)  # look before anything is cleaned, so that the report shows it
    report = s.check(repair=repair)
    problems = report.problems()
    for line in problems:
        console.print(f"  {lit(line)}", highlight=False)
    n = len(problems)
    if not n:
        console.print(f"store {lit(s.path)}: no problems found ({len(s.model_names())} models)", highlight=False)
    elif repair:
        console.print(f"store {lit(s.path)}: repaired {n} problem(s)", highlight=False)
    else:
        console.print(f"store {lit(s.path)}: {n} problem(s); `lmmap doctor --repair` fixes them", highlight=False)
        raise typer.Exit(1)
