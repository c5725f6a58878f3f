"""The logit lens: a model's intermediate layers scored as models of their own (issue 15 §2).

Layer ``K`` indexes transformers' ``hidden_states`` tuple: 0 is the
embeddings, ``K`` the output of block ``K``, and the last entry the decoder's
output, to which transformers has already applied the final norm. The
log-likelihood of a text under layer ``K`` is the plain score with the
output layer applied to ``norm(h_K)`` (``h_K`` as it is for the last entry,
so the last layer's vector equals the plain model's). All layers come from
one forward pass: the hidden states are there, and only the output layer
runs again per layer, tile by tile at the scored positions, as for the plain
score (:class:`lmmap.scoring.hf.LogProbComputer`).

The final norm is found by name under the model's base (``model.base_model``):

==============================================================  ============================
architectures (transformers classes)                            final norm
==============================================================  ============================
GPT-2, GPT-J, Falcon, BLOOM, CodeGen, GPT-Neo                   ``ln_f``
Llama, Mistral, Mixtral, Qwen2/3, Gemma, Phi-3, OLMo, StableLM  ``norm``
GPT-NeoX (Pythia)                                               ``final_layer_norm``
OPT                                                             ``decoder.final_layer_norm``
Phi-1/1.5/2                                                     ``final_layernorm``
MPT                                                             ``norm_f``
==============================================================  ============================

and checked on a probe: the module must run once per forward and its
output must be the decoder's last hidden state. A model where none is found
(OPT-350m has none: its blocks normalise their own outputs, and it projects
the last one), or where the one found fails the check, is refused with a
message that says so; ``final_norm="ATTR"`` names the module (a path under
the model, e.g. ``"model.norm"``). Models whose logits
are not the output layer applied to the hidden states (logit soft-capping)
cannot be lensed this way and are refused.

:func:`parse_layers` is torch-free (the CLI and the driver check a spec
before any model loads).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from lmmap.exceptions import InputError, ScoringError

# Names of the final norm under the model's base, in the order they are tried (see the module's table).
FINAL_NORM_ATTRS = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "norm_f", "decoder.final_layer_norm",
                    "decoder.norm")
LAYER_SUFFIX = "@layer"


def parse_layers(spec) -> "str | tuple[int, ...] | None":
    """``"all"``, a sorted tuple of distinct layer indices, or None, from ``"all"``, ``"0,4,8"`` or ints.

    Raises :class:`~lmmap.exceptions.InputError` naming ``layers`` for
    anything else (a negative index, a word, an empty list).
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
        if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise InputError(f"layers must be 'all' or comma-separated layer indices such as 0,4,8; got {spec!r}",
                             params=("layers",))
        values = [int(p) for p in parts]
    else:
        try:
            values = [int(v) for v in spec]
        except (TypeError, ValueError):
            raise InputError(f"layers must be 'all' or a list of layer indices, got {spec!r}",
                             params=("layers",)) from None
        if any(v < 0 for v in values) or any(float(v) != float(s) for v, s in zip(values, spec)):
            raise InputError(f"layers must be non-negative integers (0 = the embeddings), got {list(spec)!r}",
                             params=("layers",))
    if not values:
        raise InputError("layers must name at least one layer (or 'all')", params=("layers",))
    return tuple(sorted(set(values)))


def layer_name(model_name: str, layer: int) -> str:
    """The store name of ``model_name``'s layer ``layer``: ``MODEL@layerK``."""
    return f"{model_name}{LAYER_SUFFIX}{int(layer)}"


def resolve_layers(spec, n_hidden: int, model: str) -> tuple[int, ...]:
    """The layer indices ``spec`` (from :func:`parse_layers`) names, for a model with ``n_hidden`` hidden states."""
    spec = parse_layers(spec)
    if spec == "all":
        return tuple(range(n_hidden))
    bad = [k for k in spec if k >= n_hidden]
    if bad:
        raise InputError(f"model {model!r}: layer {bad[0]} is out of range; it has hidden states 0..{n_hidden - 1} "
                         f"(0 = the embeddings, {n_hidden - 1} = the last block, the plain model)", params=("layers",))
    return spec


def find_final_norm(model, final_norm: str | None, name: str):
    """``(path, module)`` of the final norm of a transformers causal LM (see the module's table)."""
    if final_norm is not None:
        try:
            return final_norm, model.get_submodule(final_norm)
        except AttributeError:
            raise InputError(f"model {name!r} has no module {final_norm!r} (final_norm names a module path such as "
                             "'model.norm'; see model.named_modules())", params=("final_norm",)) from None
    base = getattr(model, "base_model", None)
    prefix = getattr(model, "base_model_prefix", "") or ""
    if base is not None and base is not model:
        for attr in FINAL_NORM_ATTRS:
            try:
                module = base.get_submodule(attr)
            except AttributeError:
                continue
            return (f"{prefix}.{attr}" if prefix else attr), module
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    raise ScoringError(f"model {name!r} ({arch}): no final norm found (looked for {', '.join(FINAL_NORM_ATTRS)} under "
                       "its base model), so its layers cannot be scored; name the module with final_norm",
                       params=("final_norm",))


class LogitLens:
    """How to turn a model's ``hidden_states[K]`` into the input of its output layer, checked on a probe.

    ``n_hidden``: entries of ``hidden_states`` (blocks + 1). ``layers``: the
    indices scored. ``norm``: the final-norm module, applied to every layer
    but the last (already normed by transformers, checked).
    """

    def __init__(self, model, layers, final_norm: str | None, name: str, probe_ids: Sequence[int] | None = None):
        import torch

        self.name = name
        self.norm_path, self.norm = find_final_norm(model, final_norm, name)
        base = model.base_model
        device = model.get_input_embeddings().weight.device
        vocab = int(model.get_input_embeddings().weight.shape[0])
        ids = np.asarray(probe_ids if probe_ids is not None and len(probe_ids) >= 4 else np.arange(1, 9) % vocab)[:16]
        calls: list = []
        hook = self.norm.register_forward_hook(lambda mod, inp, out: calls.append(out))
        try:
            with torch.inference_mode():
                out = base(input_ids=torch.as_tensor(ids, dtype=torch.long, device=device)[None, :],
                           output_hidden_states=True, use_cache=False)
        except Exception as exc:
            raise ScoringError(f"model {name!r}: its hidden states cannot be read (output_hidden_states): "
                               f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        finally:
            hook.remove()
        hidden = getattr(out, "hidden_states", None)
        if not hidden:
            raise ScoringError(f"model {name!r}: its forward returns no hidden_states, so its layers cannot be scored")
        last = out.last_hidden_state
        self.n_hidden = len(hidden)
        tol = 1e-4 if last.dtype == torch.float32 else 2e-2
        if not torch.allclose(hidden[-1].float(), last.float(), atol=tol, rtol=tol):
            raise ScoringError(f"model {name!r}: the last of its hidden_states is not the decoder's output, so the "
                               "layers cannot be lined up with the plain model; it is not supported")
        if len(calls) != 1 or not torch.allclose(calls[0].float(), last.float(), atol=tol, rtol=tol):
            what = f"runs {len(calls)} times per forward" if len(calls) != 1 else "does not give the decoder's output"
            raise ScoringError(f"model {name!r}: the module {self.norm_path!r} {what}, so it is not the final norm "
                               "(or something follows it); name the final norm with final_norm",
                               params=("final_norm",))
        self.layers = resolve_layers(layers, self.n_hidden, name)

    def head_input(self, hidden_states, layer: int, index):
        """``norm(h_K)`` at ``index`` (the last layer as it is: transformers normed it already)."""
        h = hidden_states[layer][index]
        return h if layer == self.n_hidden - 1 else self.norm(h)

    def describe(self) -> dict:
        return {"final_norm": self.norm_path, "n_hidden_states": self.n_hidden}
