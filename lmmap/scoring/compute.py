"""Pure compute: a loaded scorer and texts in, log-likelihoods out (no store, no checkpoints).

Texts are sorted by length and cut into batches of at most ``batch_tokens``
padded tokens (:func:`~lmmap.scoring.encoding.plan_batches`); a text's
log-likelihood is the sum over its rows (one, or its windows when strided),
accumulated with array operations: no Python object is built per token. Both
executors (:mod:`lmmap.scoring.driver`, :mod:`lmmap.scoring.executor`) and the
backends' own ``score_texts`` helpers run this code.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from lmmap.exceptions import InputError
from lmmap.progress import ProgressFn, Tracker
from lmmap.scoring.encoding import Encoded, encode_texts, make_rows, plan_batches, resolve_max_length, rows_tokens
from lmmap.scoring.protocol import NonFiniteError, Scorer, TextScores


def iter_scores(
    scorer: Scorer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    positions: Sequence[int] | None = None,
    tracker: Tracker | None = None,
    encoded: Encoded | None = None,
    info: dict | None = None,
) -> Iterator[TextScores]:
    """Score ``texts`` batch by batch, yielding the texts each batch completes.

    ``positions`` only name texts in error messages (default: 0..n-1).
    ``tracker`` advances by each batch's tokens, with counters ``texts`` and
    ``texts_total``. ``info``, when given, receives how the batches were
    computed (``mode``, ``batch_tokens``, ``n_batches``, ``n_rows``).
    """
    L = resolve_max_length(scorer.context_length, max_length, stride)
    enc = encoded or encode_texts(scorer.tokenizer, texts, convention, L, stride, positions)
    rows = make_rows(enc.sequences, L, stride)
    if len(rows.ids) == 0:
        return
    plan = scorer.prepare(rows.ids[0], batch_tokens)
    budget = int(plan["batch_tokens"])
    if budget < 1:
        raise InputError(f"batch_tokens must be positive, got {batch_tokens}", params=("batch_tokens",))
    lengths = rows.lengths
    batches = plan_batches(lengths, budget)
    if info is not None:
        info.update(mode=plan["mode"], batch_tokens=budget, n_batches=len(batches), n_rows=len(rows.ids))
    n_texts = len(enc.sequences)
    remaining = np.bincount(rows.text, minlength=n_texts)
    total = None  # (texts,) or, for a scorer with several outputs (the layers of a logit lens), (texts, outputs)
    texts_done = 0
    for batch in batches:
        sums = scorer.score([rows.ids[i] for i in batch], rows.first[batch])
        if total is None:
            total = np.zeros((n_texts,) + np.shape(sums)[1:], dtype=np.float64)
        owners = rows.text[batch]
        np.add.at(total, owners, sums)
        np.subtract.at(remaining, owners, 1)
        done = np.unique(owners[remaining[owners] == 0])
        finite = np.isfinite(total[done]) if total.ndim == 1 else np.isfinite(total[done]).all(axis=1)
        bad = done[~finite]
        if len(bad):
            pos = int(bad[0]) if positions is None else int(positions[bad[0]])
            value = total[bad[0]] if total.ndim == 1 else total[bad[0]][~np.isfinite(total[bad[0]])][0]
            raise NonFiniteError(f"non-finite log-likelihood ({value}) for the text at position {pos}", pos)
        texts_done += len(done)
        if tracker is not None:
            tracker.advance(int(lengths[batch].sum()), texts=texts_done, texts_total=n_texts)
        if len(done):
            yield TextScores(done, total[done].copy(), enc.n_tokens[done], enc.truncated[done])


def score_texts(
    scorer: Scorer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    progress: ProgressFn = None,
    description: str = "scoring",
    chat_template: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loglik, n_tokens, truncated)`` of each text under a loaded scorer (see :mod:`lmmap.scoring.encoding`).

    Pure compute: nothing is read from or written to a store.
    ``chat_template``: prompt→response texts wrapped in the tokenizer's chat
    template. A scorer with several outputs (the layers of a logit lens) gives
    ``loglik`` a column per output. Raises
    :class:`~lmmap.scoring.protocol.NonFiniteError` if a text's
    log-likelihood is NaN or infinite.
    """
    L = resolve_max_length(scorer.context_length, max_length, stride)
    enc = encode_texts(scorer.tokenizer, texts, convention, L, stride, chat_template=chat_template)
    n = len(enc.sequences)
    layers = getattr(scorer, "layers", None)
    loglik = np.full((n,) if layers is None else (n, len(layers)), np.nan)
    with Tracker(progress, description, rows_tokens(enc, L, stride), unit="tokens") as tracker:
        for part in iter_scores(scorer, texts, convention=convention, max_length=L, stride=stride,
                                batch_tokens=batch_tokens, tracker=tracker, encoded=enc):
            loglik[part.index] = part.loglik
    return loglik, enc.n_tokens.copy(), enc.truncated.copy()
