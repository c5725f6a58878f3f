"""Text sets: chunking, sampling, identity, the authors' JSONL, and bad input."""

import json
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmmap.exceptions import LmmapError
from lmmap.data.texts import TextSet, build_text_set, text_set_identity, utf8_chunks

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_utf8_chunks_never_split_a_character():
    data = ("aé€😀" * 300).encode()
    for size in (4, 5, 7, 64, 1024):
        pieces = utf8_chunks(data, size)
        assert b"".join(pieces) == data
        for p in pieces:
            assert len(p) <= size
            p.decode("utf-8")  # raises if a character was split


def test_build_from_real_text_files(tmp_path):
    src = [STDLIB / "json", STDLIB / "this.py"]
    ts = build_text_set(src, chunk_bytes=512, min_bytes=128, n=40, random_state=3)
    assert len(ts) == 40
    sizes = [len(t.encode()) for t in ts.texts]
    assert max(sizes) <= 512 and min(sizes) >= 128
    assert len(set(ts.texts)) == 40
    assert all(s.startswith(str(STDLIB)) for s in ts.sources)
    again = build_text_set(src, chunk_bytes=512, min_bytes=128, n=40, random_state=3)
    assert again.identity == ts.identity
    other = build_text_set(src, chunk_bytes=512, min_bytes=128, n=40, random_state=4)
    assert other.identity != ts.identity


def test_sample_takes_random_state_as_int_generator_or_none():
    import random

    src = [STDLIB / "json"]
    every = build_text_set(src, chunk_bytes=512, min_bytes=128)
    ts = build_text_set(src, chunk_bytes=512, min_bytes=128, n=10, random_state=3)
    # an int draws what random.Random(int) draws (the sample of lmmap 0.1's seed=3)
    picked = sorted(random.Random(3).sample(range(len(every)), 10))
    assert ts.texts == [every.texts[i] for i in picked]
    gen = build_text_set(src, chunk_bytes=512, min_bytes=128, n=10, random_state=np.random.default_rng(3))
    again = build_text_set(src, chunk_bytes=512, min_bytes=128, n=10, random_state=np.random.default_rng(3))
    assert len(set(gen.texts)) == 10 and gen.texts == again.texts
    assert len(build_text_set(src, chunk_bytes=512, min_bytes=128, n=10, random_state=None)) == 10
    with pytest.raises(LmmapError, match="random_state must be") as err:
        build_text_set(src, chunk_bytes=512, min_bytes=128, n=10, random_state="x")
    assert err.value.params == ("random_state",)
    with pytest.raises(LmmapError, match="n must be positive") as err:
        build_text_set(src, chunk_bytes=512, min_bytes=128, n=0)
    assert err.value.params == ("n",)


def test_dedup_drop_short_and_blank(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 100 + "y" * 100)
    (tmp_path / "b.txt").write_text("x" * 100 + "y" * 100)  # duplicate chunks
    (tmp_path / "c.txt").write_text(" " * 100)  # blank
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "z" * 150}) + "\n" + json.dumps({"text": "short"}) + "\n")
    ts = build_text_set([tmp_path], chunk_bytes=100, min_bytes=50)
    assert sorted(ts.texts) == sorted(["x" * 100, "y" * 100, "z" * 100, "z" * 50])
    assert ts.table.column("chunk_idx").to_pylist()[:2] == [0, 1]


def test_identity_independent_of_format(tmp_path):
    ts = TextSet.from_texts(["alpha beta", "gamma", "δέλτα"])
    ts.save(tmp_path / "t.jsonl")
    ts.save(tmp_path / "t.parquet")
    a, b = TextSet.load(tmp_path / "t.jsonl"), TextSet.load(tmp_path / "t.parquet")
    assert a.identity == b.identity == ts.identity == text_set_identity(["alpha beta", "gamma", "δέλτα"])
    assert text_set_identity(["ab", "c"]) != text_set_identity(["a", "bc"])


def test_authors_jsonl_loads_as_is(tmp_path):
    p = tmp_path / "texts-10k-pile.jsonl"
    rows = [
        {"index": 7, "text": "first text", "pile_set_name": "Pile-CC", "pile_idx": 12, "chunk_idx": 0},
        {"index": 9, "text": "second text", "pile_set_name": "Github", "pile_idx": 40, "chunk_idx": 3},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ts = TextSet.load(p)
    assert list(ts.index) == [7, 9]
    assert ts.sources == ["Pile-CC", "Github"]
    assert ts.table.column("pile_idx").to_pylist() == [12, 40]


@pytest.mark.parametrize(
    "content, match",
    [
        (b'{"text": "ok"}\n{"text": "broken"\n', r":2: malformed JSON"),
        (b'{"text": "ok"}\n{"text": ""}\n', r":2: empty text"),
        (b'{"text": "ok"}\n{"txt": "no field"}\n', r":2: 'text' is missing"),
        (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', r":2: not valid UTF-8"),
        (b"[1, 2]\n", r":1: expected a JSON object"),
        (b"", r"empty"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(LmmapError, match=match) as exc:
        TextSet.load(p)
    assert "bad.jsonl" in str(exc.value)


def test_non_utf8_source_error_or_skip(tmp_path):
    (tmp_path / "good.txt").write_text("g" * 300)
    (tmp_path / "bad.txt").write_bytes(b"\xff" * 300)
    with pytest.raises(LmmapError, match="bad.txt: not valid UTF-8"):
        build_text_set([tmp_path], chunk_bytes=300, min_bytes=10)
    ts = build_text_set([tmp_path], chunk_bytes=300, min_bytes=10, on_bad_utf8="skip")
    assert ts.texts == ["g" * 300]


def test_empty_sources_and_bad_parameters(tmp_path):
    (tmp_path / "tiny.txt").write_text("too short")
    with pytest.raises(LmmapError, match="no chunks"):
        build_text_set([tmp_path], min_bytes=256)
    with pytest.raises(LmmapError, match="only 1 distinct"):
        build_text_set([tmp_path], min_bytes=1, n=5)
    with pytest.raises(FileNotFoundError):
        build_text_set([tmp_path / "nope"])
    with pytest.raises(LmmapError, match="duplicate text index"):
        pq.write_table(pa.table({"index": [1, 1], "text": ["a", "b"]}), tmp_path / "d.parquet")
        TextSet.load(tmp_path / "d.parquet")
