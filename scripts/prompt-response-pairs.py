"""Prompt→response pairs cut from a store's texts, for trying `lmmap texts build --prompt-field` on the demo.

Each text is cut at the first line break after a third of it: the part before is the prompt, the rest
the response (texts where that leaves under 40 characters are skipped). Writes JSONL with the fields
``prompt`` and ``response``.

    python scripts/prompt-response-pairs.py lmmap-demo/store pairs.jsonl
    lmmap texts build pairs.jsonl --prompt-field prompt --text-field response -o pr-texts.jsonl
"""

import json
import sys

from lmmap import Store


def main(store: str, out: str) -> None:
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for t in Store(store).texts.texts:
            cut = t.find("\n", len(t) // 3)
            if 0 <= cut <= len(t) - 40:
                f.write(json.dumps({"prompt": t[: cut + 1], "response": t[cut + 1 :]}) + "\n")
                n += 1
    print(f"{n} prompt→response pairs in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
