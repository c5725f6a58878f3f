"""`lmmap score`: compute log-likelihoods of models on the store's texts (resumable)."""

from __future__ import annotations

from typing import Annotated

import typer

from lmmap.cli._app import app, console, err_console, fail, lit
from lmmap.cli._options import option


def executor_options(executor: str, ray_address, gpus_per_model, shard_texts):
    """The executor flags as an :class:`lmmap.scoring.ExecutorOptions` (checked: a bad one is a one-line error)."""
    from lmmap.scoring.options import ExecutorOptions  # here, not at the top: `lmmap --help` loads no numpy

    return ExecutorOptions(executor, ray_address=ray_address, gpus_per_model=gpus_per_model, shard_texts=shard_texts)


@app.command()
def score(
    models: Annotated[list[str], typer.Argument(help="Causal LMs: local save_pretrained() directories or hub names.")],
    store: option("store"),
    device: option("device"),
    dtype: option("dtype"),
    convention: option("convention"),
    subset: option("subset"),
    name: option("name"),
    batch_tokens: option("batch_tokens"),
    max_length: option("max_length"),
    stride: option("stride"),
    trust_remote_code: option("trust_remote_code"),
    revision: option("revision"),
    device_map: option("device_map"),
    replace: option("replace"),
    checkpoint_every: option("checkpoint_every"),
    no_progress: option("no_progress"),
    backend: option("backend"),
    packing: option("packing"),
    allow_other_texts: option("allow_other_texts"),
    threads: option("threads"),
    executor: option("executor"),
    ray_address: option("ray_address"),
    gpus_per_model: option("gpus_per_model"),
    shard_texts: option("shard_texts"),
    layers: option("layers"),
    final_norm: option("final_norm"),
    chat_template: option("chat_template"),
    revisions: option("revisions"),
    trajectory: option("trajectory"),
    steps: option("steps"),
    base_url: option("base_url"),
    api_key_env: option("api_key_env"),
    tokenizer: option("tokenizer"),
    concurrency: option("concurrency"),
):
    """Score models on the store's texts; a killed run resumes from its checkpoints."""
    from lmmap import scoring
    from lmmap.cli._progress import RichProgress
    from lmmap.data.store import Store
    from lmmap.parallel import set_threads

    if name is not None and len(models) != 1:
        fail(f"--name names one model, but {len(models)} were given")
    from lmmap.scoring.options import ScoringOptions

    # NaN would mean "never checkpoint": refused here, in the command line's own words.
    if not checkpoint_every >= 0:
        fail(f"--checkpoint-every must be a number of seconds ≥ 0 (0: after every batch), got {checkpoint_every}")
    # Every option is checked here, before the store is opened (a typo in --layers, a bad --batch-tokens ...).
    options = ScoringOptions(
        backend=backend, device=device, dtype=dtype, convention=convention, batch_tokens=batch_tokens,
        max_length=max_length, stride=stride, trust_remote_code=trust_remote_code, revision=revision,
        device_map=device_map, checkpoint_every=checkpoint_every, chat_template=chat_template, packing=packing,
        layers=layers, final_norm=final_norm, base_url=base_url, api_key_env=api_key_env, tokenizer=tokenizer,
        concurrency=concurrency,
    )
    where = executor_options(executor, ray_address, gpus_per_model, shard_texts)
    set_threads(threads)
    s = Store(store)
    text_pos = None
    if subset is not None:
        from lmmap.data.subset import Subset

        sub = Subset.load(subset, store=s, allow_other_texts=allow_other_texts)
        text_pos = sub.text_pos
    with RichProgress(err_console, enabled=not no_progress) as bars:
        statuses = scoring.score_models(
            s, models, names=None if name is None else [name], text_pos=text_pos, options=options, executor=where,
            replace=replace, progress=bars, revisions=revisions, trajectory=trajectory, steps=steps,
        )
    failed = [n for n, st in statuses.items() if not st.ok]
    done = sum(st.status == "scored" for st in statuses.values())
    skipped = sum(st.status == "skipped" for st in statuses.values())
    console.print(f"{done} scored, {skipped} skipped, {len(failed)} failed; store {lit(s.path)}")
    if failed:
        fail(f"{len(failed)} model(s) failed and were not stored: {', '.join(failed)} (messages above)")
