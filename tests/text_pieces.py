"""Real texts of many lengths for the scoring tests, cut from the documents of ``stdlib_texts`` (tests/conftest.py)."""


def text_pieces(docs, cuts) -> list[str]:
    """Real texts of many lengths: from the k-th document, ``doc[start : start + base + step·k]`` for each
    ``(start, base, step)`` of ``cuts``; blank pieces are dropped."""
    out = []
    for k, doc in enumerate(docs):
        for start, base, step in cuts:
            piece = doc[start : start + base + step * k]
            if piece.strip():
                out.append(piece)
    return out
