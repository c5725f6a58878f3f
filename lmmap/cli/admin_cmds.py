"""Store maintenance commands: rm, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from lmmap.cli._app import app, console, did_you_mean, lit
from lmmap.cli._options import option
from lmmap.exceptions import InputError


@app.command()
def rm(
    models: Annotated[list[str], typer.Argument(help="Names of the models to remove (as `lmmap models` lists them).")],
    store: option("store"),
):
    """Remove models and their metadata rows from the store (all of them or, if one is not there, none)."""
    from lmmap.data.store import Store

    s = Store(store)
    # The store refuses unknown names too (and stays the authority if the store changes meanwhile); checking
    # here first adds the "did you mean" every other command gives for a model name.
    known = s.model_names()
    missing = [m for m in dict.fromkeys(models) if m not in known]
    if missing:
        hints = [did_you_mean(m, known) for m in missing[:5]]  # "; did you mean 'x'?" or ""
        named = [repr(m) + (f" ({hint[2:]})" if hint else "") for m, hint in zip(missing, hints)]
        more = " …" if len(missing) > 5 else ""
        raise InputError(f"not in the store: {', '.join(named)}{more}; nothing was removed (`lmmap models` lists what is)",
                         params=("models",))
    removed = s.remove_models(models)
    shown = ", ".join(lit(repr(n)) for n in removed[:10]) + (" …" if len(removed) > 10 else "")
    console.print(f"removed {len(removed)} model(s) from {lit(s.path)}: {shown}", highlight=False)


@app.command()
def doctor(
    store: option("store"),
    repair: option("repair"),
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
