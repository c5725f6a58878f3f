"""Is a checkpoint a quantised copy? What ``lmmap score`` records as metadata ``quantisation`` (issue 25).

The lineage test cannot order a model and its 8-bit copy from their
log-likelihoods: measured on tiny GPT-2 models, the copy differs by 0.0003
nats per text on average, of either sign. The checkpoint itself says it:

* a ``quantization_config`` in its ``config.json`` (bitsandbytes, GPTQ, AWQ,
  ...), or
* weights that lie on a quantisation grid although they are stored as floats
  (a quantised model saved dequantised): every entry of a weight matrix an
  integer multiple of one scale per row, per column, per group of 64 or 128
  along a row, or per tensor — symmetric absmax (``max|w|/127`` for 8 bits,
  ``/7`` for 4) or asymmetric min–max (``(max − min)/255``, ``/15``) — or a
  value of an 8-bit float format (``e4m3``, ``e5m2``).

:func:`weight_grid` is the numeric test (arrays in, a label out) and
:func:`quantisation_label` reads a ``quantization_config``; this module is
torch-free, and :func:`lmmap.scoring.hf.model_quantisation` applies both to a
loaded transformers model. A trained float matrix puts 0.2–1.5 % of its
entries within the tolerance of such a grid by chance (the most where one
entry per row or column is the scale's own maximum); a matrix counts as on a
grid from 99 %.
"""

from __future__ import annotations

import numpy as np

# Share of a matrix's entries within the tolerance of a grid for the matrix to lie on it.
ON_GRID_SHARE = 0.99
# Share of the sampled matrices that must lie on one grid for the model to be called quantised.
MODEL_SHARE = 0.75
# Weight matrices read per model (spread over its layers; embeddings and the output layer are often kept in
# full precision by quantisers and are not read).
MAX_MATRICES = 8
# A matrix of more entries is read in two slices, MAX_SLICE whole rows and MAX_SLICE whole columns (bounded on a
# 7B model's 4096×11008 matrices; 2,048 × 2,048 and smaller are read whole).
MAX_ELEMENTS = 1 << 22
MAX_SLICE = 512
GROUPS = (64, 128)


def _integral_share(x: np.ndarray, tol: float) -> float:
    return float(np.mean(np.abs(x - np.rint(x)) <= tol))


def _scaled(w: np.ndarray, axis, levels: int, symmetric: bool) -> np.ndarray:
    if symmetric:
        scale = np.abs(w).max(axis=axis, keepdims=True) / levels
        return w / np.where(scale > 0, scale, 1.0)
    lo = w.min(axis=axis, keepdims=True)
    scale = (w.max(axis=axis, keepdims=True) - lo) / levels
    return (w - lo) / np.where(scale > 0, scale, 1.0)


def _float8_share(w: np.ndarray, mantissa_bits: int) -> float:
    """Share of entries with at most ``mantissa_bits`` bits after the leading one (an 8-bit float's values)."""
    m, _ = np.frexp(w.astype(np.float64))
    return _integral_share(m * 2.0 ** (mantissa_bits + 1), 1e-6)


def matrix_grid(w, eps: float = float(np.finfo(np.float32).eps)) -> str | None:
    """The grid one weight matrix ``w`` (2-D) lies on, as a label (``"int8 absmax per row"``), or None.

    ``eps``: the relative precision the weights were read in (float32's by default): the tolerance in grid
    units is ``levels·eps`` (at least 1e-3; rounding to that precision moves a point by at most half of it);
    grids too fine for that precision to tell (a tolerance of 0.2 or more) are not tried.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size < 64 or not np.isfinite(w).all() or np.ptp(w) == 0:
        return None
    rows, cols = w.shape
    for bits, mant in (("e5m2", 2), ("e4m3", 3)):  # the coarser first: its values are also e4m3's
        if eps <= 2.0 ** -(mant + 2) and _float8_share(w, mant) >= ON_GRID_SHARE:
            return f"float8 {bits}"
    for levels, name in ((127, "int8 absmax"), (7, "int4 absmax"), (255, "uint8 min-max"), (15, "uint4 min-max")):
        tol = max(1e-3, levels * eps)
        if tol >= 0.2:
            continue
        symmetric = "absmax" in name
        candidates = [("per tensor", w, None), ("per row", w, 1), ("per column", w, 0)]
        for g in GROUPS:
            if cols % g == 0 and cols > g:
                candidates.append((f"per group of {g}", w.reshape(rows * (cols // g), g), 1))
        for where, arr, axis in candidates:
            if _integral_share(_scaled(arr, axis, levels, symmetric), tol) >= ON_GRID_SHARE:
                return f"{name} {where}"
    return None


def weight_grid(matrices, eps: float = float(np.finfo(np.float32).eps)) -> str | None:
    """The grid most of ``matrices`` lie on (at least :data:`MODEL_SHARE` of them, the same label), or None.

    An entry may be a list of slices of one matrix (whole rows, whole columns): the matrix's label is the
    first slice's that has one.
    """
    def label(m):
        if isinstance(m, (list, tuple)):
            return next((lab for lab in (matrix_grid(x, eps) for x in m) if lab is not None), None)
        return matrix_grid(m, eps)

    labels = [label(m) for m in matrices]
    if not labels:
        return None
    found = [lab for lab in labels if lab is not None]
    if not found:
        return None
    best = max(set(found), key=found.count)
    return best if found.count(best) >= MODEL_SHARE * len(labels) else None


def quantisation_label(qc) -> str:
    """A ``quantization_config`` (a dict or transformers' config object) as a label: ``"bitsandbytes 8-bit"``."""
    get = qc.get if isinstance(qc, dict) else (lambda k, d=None: getattr(qc, k, d))
    method = get("quant_method", None) or "quantised"
    method = getattr(method, "value", method)
    bits = get("bits", None) or (8 if get("load_in_8bit", False) else 4 if get("load_in_4bit", False) else None)
    return f"{method} {bits}-bit" if bits else str(method)


__all__ = ["MAX_ELEMENTS", "MAX_MATRICES", "MAX_SLICE", "matrix_grid", "quantisation_label", "weight_grid"]
