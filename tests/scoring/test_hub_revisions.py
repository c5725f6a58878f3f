"""Hub names with revisions, resolved offline from a genuine hub cache (issue 15 §1: training checkpoints).

``lmmap-test/tiny-run`` has branches ``step10``, ``step30``, ``step60`` (and
``main`` = ``step60``), each a tiny GPT-2 with its own weights; see
hub_cache.py for the layout and for how the process is pointed at it. Every
test here runs with ``HF_HUB_OFFLINE=1`` and with non-loopback connections
and DNS look-ups refused and recorded (the fixture fails the test if any was
attempted: libraries catch such errors and fall back to the cache, so a
refusal alone would go unnoticed).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from hub_cache import (  # noqa: E402
    NetworkGuard,
    blob_etag,
    make_hub_cache,
    read_refs,
    repo_folder,
    use_hub_cache,
)

from lmmap.exceptions import ScoringError  # noqa: E402
from lmmap.scoring.hf import describe_revision, load_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PARAM = "transformer.h.1.mlp.c_fc.weight"  # a weight every seed draws differently


def saved_weights(directory) -> dict[str, torch.Tensor]:
    """The tensors of a save_pretrained() directory, read from its safetensors file (not through transformers)."""
    return safetensors_torch.load_file(str(directory / "model.safetensors"))


# -- the cache itself ------------------------------------------------------------------------------


def test_the_cache_is_what_huggingface_hub_writes(tiny_run_hub):
    """huggingface_hub's own cache scanner reads it without warnings: one repo, three commits, four refs."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir()  # the default cache: checks that the fixture pointed the library at ours
    assert info.warnings == []
    (repo,) = info.repos
    assert repo.repo_id == tiny_run_hub.repo_id and repo.repo_type == "model"
    refs = {ref: rev.commit_hash for rev in repo.revisions for ref in rev.refs}
    assert refs == tiny_run_hub.commits
    assert set(refs) == {"main", "step10", "step30", "step60"} and refs["main"] == refs["step60"]
    assert len(set(refs.values())) == 3 and all(len(c) == 40 and int(c, 16) >= 0 for c in refs.values())
    # Blobs are shared where the content is: the tokenizer and config once, the weights once per step.
    blobs = {p.name for p in (tiny_run_hub.folder / "blobs").iterdir()}
    for rev, src in tiny_run_hub.checkpoints.items():
        snap = tiny_run_hub.folder / "snapshots" / tiny_run_hub.commits[rev]
        for f in src.iterdir():
            link = snap / f.name
            assert link.is_symlink() and not link.readlink().is_absolute()
            assert link.resolve().name == blob_etag(f) in blobs and link.read_bytes() == f.read_bytes()
    n_files = len(list(tiny_run_hub.checkpoints["step10"].iterdir()))
    assert len(blobs) == n_files - 1 + 3


def test_a_revision_is_resolved_from_the_cache_by_huggingface_hub(tiny_run_hub):
    from huggingface_hub import hf_hub_download

    for rev in tiny_run_hub.revisions:
        path = hf_hub_download(tiny_run_hub.repo_id, "model.safetensors", revision=rev)
        assert tiny_run_hub.commits[rev] in path
        assert open(path, "rb").read() == (tiny_run_hub.checkpoints[rev] / "model.safetensors").read_bytes()


# -- lmmap's loader ----------------------------------------------------------------------------------


def test_load_model_loads_the_revision_asked_for(tiny_run_hub):
    """(a) ``revision="step30"`` gives step30's weights, not main's (step60) nor another step's."""
    weights = {rev: saved_weights(d)[PARAM] for rev, d in tiny_run_hub.checkpoints.items()}
    assert not torch.equal(weights["step10"], weights["step30"]) and not torch.equal(weights["step30"], weights["step60"])
    model, tok = load_model(tiny_run_hub.repo_id, revision="step30", device="cpu", dtype="float32")
    got = model.state_dict()[PARAM]
    torch.testing.assert_close(got, weights["step30"], rtol=0, atol=0)
    assert len(tok) == model.get_input_embeddings().weight.shape[0]
    main, _ = load_model(tiny_run_hub.repo_id, device="cpu", dtype="float32")  # no revision: main = step60
    torch.testing.assert_close(main.state_dict()[PARAM], weights["step60"], rtol=0, atol=0)


def test_load_model_gives_the_same_logits_as_the_checkpoint_directory(tiny_run_hub):
    """The whole model, not one tensor: same outputs as loading step10's own directory."""
    hub, tok = load_model(tiny_run_hub.repo_id, revision="step10", device="cpu", dtype="float32")
    local, local_tok = load_model(str(tiny_run_hub.checkpoints["step10"]), device="cpu", dtype="float32")
    ids = tok("def f(x):\n    return x + 1\n", return_tensors="pt").input_ids
    assert ids.tolist() == local_tok("def f(x):\n    return x + 1\n", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(hub(ids).logits, local(ids).logits, rtol=0, atol=0)


def test_describe_revision_is_the_commit_hash(tiny_run_hub):
    """(b) The revision recorded in the store is the commit the branch pointed to, read from refs/."""
    refs = read_refs(tiny_run_hub.folder)
    for rev in tiny_run_hub.revisions:
        assert describe_revision(tiny_run_hub.repo_id, rev) == refs[rev]
    assert describe_revision(tiny_run_hub.repo_id, None) == refs["main"] == refs["step60"]
    # A commit hash given as the revision describes itself.
    assert describe_revision(tiny_run_hub.repo_id, refs["step30"]) == refs["step30"]


def test_load_model_by_commit_hash(tiny_run_hub):
    model, _ = load_model(tiny_run_hub.repo_id, revision=tiny_run_hub.commits["step30"], device="cpu")
    torch.testing.assert_close(model.state_dict()[PARAM], saved_weights(tiny_run_hub.checkpoints["step30"])[PARAM],
                               rtol=0, atol=0)


def test_an_unknown_revision_is_a_one_line_scoring_error(tiny_run_hub):
    """(c) A one-line ScoringError naming the model and saying its files are not in the cache (true of
    transformers' message passed on today and of the proposed one below)."""
    with pytest.raises(ScoringError) as err:
        load_model(tiny_run_hub.repo_id, revision="step99", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert repr(tiny_run_hub.repo_id) in msg
    assert "cache" in msg and ("couldn't connect" in msg or "offline" in msg)


def test_an_unknown_revision_is_named_with_the_cached_ones(tiny_run_hub):
    """(c) What it should say: the revision, that it is not in the cache, and which ones are."""
    with pytest.raises(ScoringError) as err:
        load_model(tiny_run_hub.repo_id, revision="step99", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'step99'" in msg and "not in the local Hugging Face cache" in msg and "offline" in msg
    assert "main, step10, step30, step60" in msg
    assert "revision" in err.value.params


def test_describe_revision_of_an_uncached_revision_falls_back_to_the_name(tiny_run_hub):
    """describe_revision never raises (load_model reports the error): an uncached branch is described by name."""
    assert describe_revision(tiny_run_hub.repo_id, "step99") == "step99"


# -- the fixture's guarantees ------------------------------------------------------------------------


def test_nothing_reaches_the_network(tiny_run_hub):
    """(d) Loading every revision resolves names and connects to nothing; the guard itself does refuse."""
    for rev in tiny_run_hub.revisions:
        load_model(tiny_run_hub.repo_id, revision=rev, device="cpu")
        describe_revision(tiny_run_hub.repo_id, rev)
    with pytest.raises(ScoringError):
        load_model(tiny_run_hub.repo_id, revision="step99", device="cpu")
    assert tiny_run_hub.network.attempts == []
    # The guard is live: a connection to the hub is refused (and recorded; cleared so the fixture passes).
    with socket.socket() as s, pytest.raises(OSError, match="network access refused"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed, and refused before any packet anyway
    with pytest.raises(OSError, match="network access refused"):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(tiny_run_hub.network.attempts) == 2
    tiny_run_hub.network.attempts.clear()
    # Loopback stays allowed (Ray, local servers): an unused port is refused by the kernel, not by the guard.
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", 9)) != 0
    assert tiny_run_hub.network.attempts == []


def test_huggingface_hub_is_offline(tiny_run_hub):
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    assert constants.is_offline_mode()
    with pytest.raises(OfflineModeIsEnabled):
        get_session().get("https://huggingface.co/api/models/lmmap-test/tiny-run")
    assert tiny_run_hub.network.attempts == []


# -- the layout variants huggingface_hub accepts ---------------------------------------------------


def test_plain_files_instead_of_symlinks_load_too(tmp_path, monkeypatch, tiny_run_checkpoints):
    """Where symlinks are unavailable the hub client copies files into snapshots/: offline resolution accepts that."""
    cache = tmp_path / "hub"
    repo = make_hub_cache(cache, "lmmap-test/copied", {"step30": tiny_run_checkpoints["step30"]}, symlinks=False)
    assert not any(p.is_symlink() for p in repo.rglob("*"))
    use_hub_cache(monkeypatch, cache)
    guard = NetworkGuard().install(monkeypatch)
    model, _ = load_model("lmmap-test/copied", revision="step30", device="cpu")
    torch.testing.assert_close(model.state_dict()[PARAM], saved_weights(tiny_run_checkpoints["step30"])[PARAM],
                               rtol=0, atol=0)
    assert describe_revision("lmmap-test/copied", "step30") == read_refs(repo)["step30"]
    assert read_refs(repo)["main"] == read_refs(repo)["step30"]  # one revision: main is it
    assert guard.attempts == []


def test_repo_folder_name_matches_huggingface_hub():
    from huggingface_hub.file_download import repo_folder_name

    assert repo_folder("lmmap-test/tiny-run") == repo_folder_name(repo_id="lmmap-test/tiny-run", repo_type="model")


# -- through the store driver -------------------------------------------------------------------------


def test_score_models_with_a_hub_revision_records_its_commit(tmp_path, tiny_run_hub, stdlib_texts):
    """score_models(revision="step30") scores step30's weights and stores the commit hash as the revision."""
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet
    from lmmap.scoring import score_models
    from lmmap.scoring.hf import score_texts

    texts = [t[i:i + 200] for t in stdlib_texts[20:23] for i in (0, 1000, 2000)]
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    out = score_models(store, [tiny_run_hub.repo_id], names=["tiny-run@step30"], revision="step30", device="cpu",
                       progress=False)
    assert out["tiny-run@step30"].status == "scored"
    assert store.record("tiny-run@step30")["revision"] == tiny_run_hub.commits["step30"]
    expected = {}
    for rev in tiny_run_hub.revisions:  # each checkpoint's own directory, scored directly
        model, tok = load_model(str(tiny_run_hub.checkpoints[rev]), device="cpu")
        expected[rev] = score_texts(model, tok, texts)[0]
    got = store.vectors("tiny-run@step30")["loglik"].to_numpy()
    np.testing.assert_allclose(got, expected["step30"], atol=1e-4)
    assert np.abs(expected["step10"] - expected["step30"]).max() > 1.0  # the steps' vectors really differ
