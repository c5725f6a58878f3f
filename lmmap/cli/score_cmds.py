"""`lmmap score`: compute log-likelihoods of models on the store's texts (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmmap.cli._app import AllowOtherTextsOption, StoreOption, ThreadsOption, app, console, err_console, fail, lit

# The executor options, shared by `lmmap score`, `lmmap add` and `lmmap demo`.
ExecutorOption = Annotated[str, typer.Option("--executor", metavar="local|ray", help="local: score in this process, one model after another; ray: one Ray task per (model, shard of texts) on a Ray cluster, this process alone writing the store (pip install 'lmmap\\[ray]').")]
RayAddressOption = Annotated[Optional[str], typer.Option("--ray-address", metavar="auto|HOST:PORT", help="--executor ray: the cluster to join (auto: the one started on this node with `ray start`). Default: a private Ray instance on this machine, listening on loopback only.")]
GpusPerModelOption = Annotated[Optional[float], typer.Option("--gpus-per-model", metavar="G", help="--executor ray: GPUs each task asks Ray for (default: 0, CPU tasks).")]
ShardTextsOption = Annotated[Optional[int], typer.Option("--shard-texts", metavar="S", help="--executor ray: texts per task (default: all of a model's texts). Smaller shards spread a model over more workers and lose less when a worker dies, at one model load per shard.")]


def executor_kwargs(executor: str, ray_address, gpus_per_model, shard_texts) -> dict:
    """The executor options as keyword arguments of score_models (the defaults left out)."""
    kw = dict(ray_address=ray_address, gpus_per_model=gpus_per_model, shard_texts=shard_texts)
    kw = {k: v for k, v in kw.items() if v is not None}
    return {"executor": executor, **kw} if executor != "local" or kw else {}


@app.command()
def score(
    models: Annotated[list[str], typer.Argument(help="Causal LMs: local save_pretrained() directories or hub names.")],
    store: StoreOption,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (log-softmax is always float32).")] = "float32",
    convention: Annotated[str, typer.Option(help="reference (the authors': first token unscored) or full (BOS/EOS prepended).")] = "reference",
    subset: Annotated[Optional[Path], typer.Option("--subset", help="SUBSET.json from `lmmap select`: score only its texts.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Store a single model under this name instead of MODEL.")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Tokens per batch (default: 1024 on CPU; on CUDA sized from free GPU memory; --backend vllm: tokens per engine call, 16384 on CPU).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Context length (default: the model's); longer texts are truncated.")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Score long texts with a sliding window moving this many tokens, instead of truncating.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the model's own code from its repository (only for code you trust).")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="Passed to from_pretrained (auto: spread a large model over devices).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Score again models already in the store.")] = False,
    checkpoint_every: Annotated[float, typer.Option("--checkpoint-every", help="Seconds between checkpoints (0: after every batch).")] = 60.0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    backend: Annotated[str, typer.Option("--backend", metavar="hf|vllm", help="hf (transformers) or vllm (vLLM's offline engine; pip install 'lmmap[vllm]'). Both score lmmap's own token ids: the numbers agree within 1e-3 nats per text.")] = "hf",
    packing: Annotated[str, typer.Option("--packing", metavar="auto|on|off", help="--backend hf: pack rows of different lengths into shared sequences, no padding (auto: where it saves work; flash-attention varlen on GPUs).")] = "auto",
    allow_other_texts: AllowOtherTextsOption = False,
    threads: ThreadsOption = "auto",
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    gpus_per_model: GpusPerModelOption = None,
    shard_texts: ShardTextsOption = None,
    layers: Annotated[Optional[str], typer.Option("--layers", metavar="all|0,4,8", help="The logit lens: score every layer (or these indices of transformers' hidden_states; 0 = the embeddings) from one forward pass, the output layer applied after the final norm; each layer is stored as MODEL@layerK.")] = None,
    final_norm: Annotated[Optional[str], typer.Option("--final-norm", metavar="ATTR", help="--layers: the final norm's module path (e.g. model.norm) when lmmap does not find it.")] = None,
    chat_template: Annotated[bool, typer.Option("--chat-template", help="Texts with prompts: apply the tokenizer's chat template (the prompt as the user's turn, the text as the assistant's); recorded with the vector.")] = False,
    revisions: Annotated[Optional[str], typer.Option("--revisions", metavar="REV,REV,...", help="Hub revisions of one model (e.g. step1000,step2000): each stored as MODEL@REV, a trajectory with its step.")] = None,
    trajectory: Annotated[Optional[str], typer.Option("--trajectory", metavar="NAME", help="The models are checkpoints of one training run: each stored as NAME@DIRECTORY, with its step (the last number in the directory name, or --steps).")] = None,
    steps: Annotated[Optional[str], typer.Option("--steps", metavar="S,S,...", help="--revisions/--trajectory: the step of each checkpoint, in order.")] = None,
):
    """Score models on the store's texts; a killed run resumes from its checkpoints."""
    from lmmap import scoring
    from lmmap.cli._progress import RichProgress
    from lmmap.data.store import Store
    from lmmap.parallel import set_threads

    if name is not None and len(models) != 1:
        fail(f"--name names one model, but {len(models)} were given")
    from lmmap.scoring.layers import parse_layers

    parse_layers(layers)  # a typo is refused before the store is opened
    # NaN passes the library's `< 0` check and silently means "never checkpoint": refused here, by its flag.
    if not checkpoint_every >= 0:
        fail(f"--checkpoint-every must be a number of seconds ≥ 0 (0: after every batch), got {checkpoint_every}")
    set_threads(threads)
    s = Store(store)
    text_pos = None
    if subset is not None:
        from lmmap.data.subset import Subset

        sub = Subset.load(subset, store=s, allow_other_texts=allow_other_texts)
        text_pos = sub.text_pos
    with RichProgress(err_console, enabled=not no_progress) as bars:
        statuses = scoring.score_models(
            s, models, names=None if name is None else [name], text_pos=text_pos, device=device, dtype=dtype,
            convention=convention, batch_tokens=batch_tokens, max_length=max_length, stride=stride,
            trust_remote_code=trust_remote_code, revision=revision, replace=replace, progress=bars,
            checkpoint_every=checkpoint_every, device_map=device_map, backend=backend, packing=packing,
            layers=layers, final_norm=final_norm, chat_template=chat_template, revisions=revisions,
            trajectory=trajectory, steps=steps, **executor_kwargs(executor, ray_address, gpus_per_model, shard_texts),
        )
    failed = [n for n, st in statuses.items() if not st.ok]
    done = sum(st.status == "scored" for st in statuses.values())
    skipped = sum(st.status == "skipped" for st in statuses.values())
    console.print(f"{done} scored, {skipped} skipped, {len(failed)} failed; store {lit(s.path)}")
    if failed:
        fail(f"{len(failed)} model(s) failed and were not stored: {', '.join(failed)} (messages above)")
