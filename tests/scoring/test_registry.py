"""Backends as plug-ins (issue 23): the registry, entry points, the options objects, and scoring's import graph."""

from __future__ import annotations

import ast
import dataclasses
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_main import run_main

import lmmap.scoring
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring import (
    BigramModel, ExecutorOptions, FakeBackend, FakeScorer, ScoringOptions, backend_names, get_backend,
    register_backend, score_models,
)
from lmmap.scoring import registry

SCORING = Path(lmmap.scoring.__file__).resolve().parent
TEXTS = ["the cat sat on the mat", "a dog", "colourless green ideas sleep furiously", "lorem ipsum dolor sit amet"]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.create(tmp_path / "store", TextSet.from_texts(TEXTS))


@pytest.fixture
def clean_registry():
    """The registry and the entry points as they were before the test (a test registers backends of its own)."""
    saved = dict(registry._factories)
    yield
    registry._factories.clear()
    registry._factories.update(saved)
    registry.refresh_entry_points()


class RecordingBackend(FakeBackend):
    """A fake backend whose load takes a server's URL and key variable, and keeps what it was given."""

    name = "recording"
    load_options = ("base_url", "api_key_env")
    calls: list = []

    def load(self, source, *, base_url=None, api_key_env=None, **kw):
        RecordingBackend.calls.append(dict(kw, base_url=base_url, api_key_env=api_key_env))
        return super().load(source, **kw)


# -- the registry ------------------------------------------------------------------------------


def test_the_built_in_backends_are_registered_without_being_imported():
    import subprocess

    code = ("import sys, lmmap.scoring as s; print(s.backend_names()); "
            "print(sorted(m for m in ('lmmap.scoring.hf', 'lmmap.scoring.vllm', 'torch', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "('hf', 'vllm', 'fake', 'openai')"
    assert out[1] == "[]"  # registered by name: not one backend module imported
    assert type(get_backend("fake")) is FakeBackend and get_backend("hf").name == "hf"
    assert get_backend("fake") is not get_backend("fake")  # a fresh object per lookup, as before the registry


def test_an_unknown_backend_is_one_line_with_the_known_ones_and_a_suggestion():
    with pytest.raises(InputError) as e:
        get_backend("hff")
    msg = str(e.value)
    assert msg == "backend must be one of hf, vllm, fake, openai or a Backend object, got 'hff'; did you mean 'hf'?"
    assert e.value.params == ("backend",)
    with pytest.raises(InputError, match=r"got 'torch'$"):  # nothing close: no suggestion
        ScoringOptions(backend="torch")
    with pytest.raises(InputError, match="or a Backend object, got 42"):
        get_backend(42)


def test_the_command_line_says_the_flag_and_the_suggestion(store):
    code, _, err = run_main("score", "a", "--store", store.path, "--backend", "fak", "--no-progress")
    assert code == 1 and err.strip().splitlines() == [
        "error: --backend must be one of hf, vllm, fake, openai or a Backend object, got 'fak'; did you mean 'fake'?"]
    code, _, err = run_main("score", "a", "--store", store.path, "--backend", "fake", "--packing", "on")
    assert code == 1 and err.strip().splitlines() == ["error: --backend fake cannot pack rows (--packing on); use "
                                                      "--backend hf"]
    code, _, err = run_main("score", "a", "--store", store.path, "--backend", "fake", "--shard-texts", "5")
    assert code == 1 and err.strip().splitlines()[0].startswith("error: --shard-texts 5 needs --executor ray")
    assert store.model_names() == []


def test_a_registered_backend_is_scored_through_by_name(store, clean_registry):
    model = BigramModel.from_name("a")
    register_backend("mine", lambda: FakeBackend({"m": model}))
    assert "mine" in backend_names()
    st = score_models(store, ["m"], backend="mine")["m"]
    assert st.status == "scored"
    want = score_models(store, ["m"], names=["m2"], backend=FakeBackend({"m": model}))["m2"]
    assert want.status == "scored"
    np.testing.assert_array_equal(store.vectors("m")["loglik"], store.vectors("m2")["loglik"])
    with pytest.raises(InputError, match="backend 'mine' is already registered; pass replace=True"):
        register_backend("mine", FakeBackend)
    register_backend("mine", FakeBackend, replace=True)
    assert type(get_backend("mine")) is FakeBackend
    with pytest.raises(InputError, match="name must be a lowercase backend name"):
        register_backend("My Backend", FakeBackend)
    with pytest.raises(InputError, match="factory must be a callable"):
        register_backend("other", "not a reference")


def test_a_factory_that_makes_no_backend_is_refused(clean_registry):
    register_backend("broken", lambda: object())
    with pytest.raises(ScoringError, match="backend 'broken': its factory returned .* which lacks name, check, load"):
        get_backend("broken")


def _plugin(root: Path, name: str, module: str, body: str, target: str) -> None:
    """A real installed distribution, as pip leaves it: a module and a dist-info with an ``lmmap.backends`` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lmmap.backends]\n{name} = {target}\n")


PLUGIN = """
    from lmmap.scoring.fake import BigramModel, FakeBackend


    class TinyBackend(FakeBackend):
        name = "tiny"

        def __init__(self):
            super().__init__({"only": BigramModel.from_name("plugged")})
"""


def test_a_third_party_backend_is_found_through_its_entry_point(store, tmp_path, monkeypatch, clean_registry):
    site = tmp_path / "site"
    site.mkdir()
    _plugin(site, "tiny", "lmmap_tiny_plugin", PLUGIN, "lmmap_tiny_plugin:TinyBackend")
    _plugin(site, "missing", "lmmap_missing_plugin", "", "lmmap_missing_plugin_nope:Backend")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh_entry_points()
    assert backend_names()[:3] == ("hf", "vllm", "fake") and {"tiny", "missing"} <= set(backend_names())
    be = get_backend("tiny")
    assert type(be).__module__ == "lmmap_tiny_plugin" and be.name == "tiny"
    st = score_models(store, ["only"], backend="tiny")["only"]
    assert st.status == "scored"
    rec = store.record("only")
    assert rec["revision"] == FakeBackend({"only": BigramModel.from_name("plugged")}).revision("only", None)
    # through the command line too: the flag takes any registered name
    code, out, err = run_main("score", "only", "--store", store.path, "--backend", "tiny", "--name", "again",
                              "--no-progress", "--device", "cpu")
    assert code == 0, err
    np.testing.assert_array_equal(store.vectors("again")["loglik"], store.vectors("only")["loglik"])
    # a plug-in that cannot be imported: one line naming its entry point
    with pytest.raises(ScoringError) as e:
        get_backend("missing")
    assert "backend 'missing' (entry point lmmap_missing_plugin_nope:Backend in group lmmap.backends) could not " \
           "be imported: ModuleNotFoundError" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="did you mean 'tiny'"):
        get_backend("tinyy")


def test_a_registered_name_wins_over_an_entry_point_of_that_name(tmp_path, monkeypatch, clean_registry):
    site = tmp_path / "site"
    site.mkdir()
    _plugin(site, "fake", "lmmap_shadow_plugin", PLUGIN, "lmmap_shadow_plugin:TinyBackend")
    monkeypatch.syspath_prepend(str(site))
    registry.refresh_entry_points()
    assert type(get_backend("fake")) is FakeBackend
    assert backend_names().count("fake") == 1


# -- the options --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, words, param", [
    (dict(batch_tokens=0), "batch_tokens must be a positive integer, got 0", "batch_tokens"),
    (dict(batch_tokens=2.5), "batch_tokens must be a positive integer, got 2.5", "batch_tokens"),
    (dict(max_length=1), "max_length must be an integer ≥ 2, got 1", "max_length"),
    (dict(stride=0), "stride must be a positive integer, got 0", "stride"),
    (dict(logits_memory=-1), "logits_memory must be a positive integer", "logits_memory"),
    (dict(checkpoint_every=float("nan")), "checkpoint_every must be a number ≥ 0, got nan", "checkpoint_every"),
    (dict(checkpoint_every=-1), "checkpoint_every must be a number ≥ 0", "checkpoint_every"),
    (dict(convention="both"), "convention", "convention"),
    (dict(packing="maybe"), "packing must be one of auto, on, off, got 'maybe'", "packing"),
    (dict(layers="1,x"), "layers must be 'all' or comma-separated layer indices", "layers"),
    (dict(final_norm="model.norm"), "final_norm needs layers", "final_norm"),
    (dict(trust_remote_code="yes"), "trust_remote_code must be True or False, got 'yes'", "trust_remote_code"),
    (dict(revision=""), "revision must be a non-empty string or None", "revision"),
    (dict(base_url="localhost:8000"), "base_url must be an http:// or https:// URL, got 'localhost:8000'",
     "base_url"),
    (dict(api_key_env="sk-abc123secret"), "api_key_env must name an environment variable", "api_key_env"),
    (dict(backend="nope"), "backend must be one of hf, vllm, fake", "backend"),
])
def test_scoring_options_refuse_bad_values_in_one_line(kw, words, param):
    with pytest.raises(InputError) as e:
        ScoringOptions(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert param in e.value.params


def test_a_key_pasted_as_the_variable_name_is_not_repeated():
    with pytest.raises(InputError) as e:
        ScoringOptions(api_key_env="sk-abc123secret")
    assert "sk-abc123secret" not in str(e.value) and "got 15 characters" in str(e.value)


@pytest.mark.parametrize("kw, words", [
    (dict(executor="dask"), "executor must be one of local, ray, got 'dask'"),
    (dict(shard_texts=5), "shard_texts=5 needs executor='ray'"),
    (dict(executor="ray", shard_texts=0), "shard_texts must be a positive integer, got 0"),
    (dict(executor="ray", shard_texts=True), "shard_texts must be a positive integer"),
    (dict(executor="ray", gpus_per_model=float("inf")), "gpus_per_model must be a number ≥ 0, got inf"),
    (dict(executor="ray", ray_address=" "), "ray_address must be auto, HOST:PORT or ray://HOST:PORT"),
])
def test_executor_options_refuse_bad_values_in_one_line(kw, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ExecutorOptions(**kw)


def test_options_are_frozen_normalised_and_replaced_with_checks():
    opts = ScoringOptions(device="cpu", layers=[3, 1, 3])
    assert opts.layers == (1, 3)
    assert ScoringOptions(layers="3,1") == opts.replace(device="auto") == ScoringOptions(layers=(1, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.device = "cuda"
    with pytest.raises(InputError, match="batch_tokens must be a positive integer"):
        opts.replace(batch_tokens=0)
    where = ExecutorOptions("ray", shard_texts=np.int64(5))
    assert type(where.shard_texts) is int and where.shard_texts == 5
    assert type(ScoringOptions(stride=np.int64(8)).stride) is int  # numpy ints would break the settings key's JSON


def test_score_models_takes_options_and_keywords_that_override_them(store):
    opts = ScoringOptions(backend="fake", convention="full", max_length=16)
    st = score_models(store, ["a"], options=opts, max_length=32)["a"]
    assert st.status == "scored"
    rec = store.record("a")
    assert (rec["convention"], rec["max_length"]) == ("full", 32)  # the keyword won; the rest is the options'
    with pytest.raises(InputError, match="devcie is not a scoring option; did you mean device"):
        score_models(store, ["b"], options=opts, devcie="cpu")
    with pytest.raises(InputError, match="options must be a ScoringOptions, got dict"):
        score_models(store, ["b"], options={"backend": "fake"})
    with pytest.raises(InputError, match="shard_texts=3 needs executor='ray'"):
        score_models(store, ["b"], options=opts, executor=ExecutorOptions(), shard_texts=3)
    assert store.model_names() == ["a"]


def test_a_backend_specific_option_is_refused_for_a_backend_without_it(store):
    with pytest.raises(InputError) as e:
        score_models(store, ["a"], backend="fake", packing="on")
    assert str(e.value) == "backend='fake' cannot pack rows (packing='on'); use backend='hf'"
    assert e.value.params == ("backend", "packing")
    with pytest.raises(InputError, match=r"^backend='fake' cannot score layers \(layers='all'\); use backend='hf'$"):
        score_models(store, ["a"], backend="fake", layers="all")
    with pytest.raises(InputError, match=r"^backend='fake' cannot reach a server \(base_url='http://localhost:1/v1'\); use backend='openai'$"):
        score_models(store, ["a"], backend="fake", base_url="http://localhost:1/v1")
    assert store.model_names() == []


def test_the_server_url_and_key_variable_reach_the_backends_load(store, clean_registry):
    register_backend("recording", RecordingBackend)
    RecordingBackend.calls.clear()
    st = score_models(store, ["a"], backend="recording", base_url="https://api.example.com/v1",
                      api_key_env="EXAMPLE_API_KEY")["a"]
    assert st.status == "scored"
    assert RecordingBackend.calls[-1]["base_url"] == "https://api.example.com/v1"
    assert RecordingBackend.calls[-1]["api_key_env"] == "EXAMPLE_API_KEY"
    # Left unset, a backend-specific option is not passed at all: a load written without it still works.
    plain = FakeBackend()
    opts = ScoringOptions(backend="fake")
    assert set(opts.load_kwargs(plain)) == {"device", "dtype", "trust_remote_code", "revision", "device_map",
                                            "logits_memory"}
    assert isinstance(plain.load("a", **opts.load_kwargs(plain)), FakeScorer)


def test_hf_takes_packing_and_layers_through_load(monkeypatch):
    from lmmap.scoring.hf import HFBackend

    opts = ScoringOptions(packing="off", layers="all", final_norm="model.norm")
    kw = opts.load_kwargs(HFBackend())
    assert (kw["packing"], kw["layers"], kw["final_norm"]) == ("off", "all", "model.norm")
    opts.check_for(HFBackend())  # accepted: nothing raised


# -- the analyses take the options ------------------------------------------------------------------


def test_the_analyses_refuse_a_dict_of_keywords(store):
    from lmmap.analyses.adaptive import place_adaptive

    with pytest.raises(InputError, match="options must be a ScoringOptions, got dict"):
        place_adaptive(store, ["x"], scoring={"device": "cpu"})
    with pytest.raises(InputError, match="executor must be 'local', 'ray' or an ExecutorOptions"):
        place_adaptive(store, ["x"], executor=3)


# -- the import graph -------------------------------------------------------------------------------


def _scoring_imports() -> dict[str, set[str]]:
    """module → the scoring modules it imports, at the top or inside functions (read from the source)."""
    modules = {p.stem: p for p in SCORING.glob("*.py")}
    name_of = {f"lmmap.scoring.{m}": m for m in modules if m != "__init__"}
    name_of["lmmap.scoring"] = "__init__"
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from lmmap.scoring import executor` imports the submodule; `from lmmap.scoring import X` the package
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in name_of else node.module
                           for a in node.names]
            graph[mod] |= {name_of[t] for t in targets if t in name_of and name_of[t] != mod}
    return graph


def test_scoring_has_no_import_cycle():
    """No scoring module imports one that imports it back, directly or through others (function-level imports count).

    The package's ``__init__`` is a module like the others here; the implicit
    import of a package by its submodules is not an import statement and is
    not counted.
    """
    graph = _scoring_imports()
    assert graph["driver"] and "executor" in graph["driver"]  # the walk sees function-level imports
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_scoring_module_imports_another_ones_private_names():
    offenders = []
    for path in sorted(SCORING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmmap.scoring"):
                offenders += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []


def test_the_backends_do_not_import_the_driver_or_the_executor():
    graph = _scoring_imports()
    for backend in ("hf", "vllm", "fake"):
        assert not graph[backend] & {"driver", "executor", "__init__"}, backend
