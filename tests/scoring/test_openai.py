"""--backend openai against a small stand-in server (http.server in a thread, on 127.0.0.1 only).

The stand-in answers completions requests the way vLLM's OpenAI-compatible server does (``echo`` with
``logprobs``, ``max_tokens=0``, ``/v1/models``, ``/version``) with log-probabilities from a fixed
formula, so that lmmap's sums can be compared exactly with a local scorer of the same formula; and it
fails on demand as a real server will not (429, 503, dropped connections, slow answers, wrong token
counts, no prompt log-probabilities, another tokenisation), to test the retries and the one-line
errors. The real server (vLLM's) is tested in tests/scoring/test_openai_vllm.py.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cli_main import run_main
from lmmap.data.store import Interrupted, Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring import score_models
from lmmap.scoring.compute import score_texts
from lmmap.scoring.options import ScoringOptions

pytest.importorskip("transformers")

KEY = "sk-test-0123456789abcdef"
CONTEXT = 64


def logprob(prev: np.ndarray, tok: np.ndarray) -> np.ndarray:
    """The stand-in's model: log p(tok | prev), negative, different for every pair."""
    return -(((prev * 7 + tok * 13) % 101) + 1) / 17.0


class Stub:
    """The stand-in server's state: what it serves, what it was asked, and the failures queued for it."""

    def __init__(self, tokenizer, model: str, *, owned_by="vllm", key=None, delay=0.0, models_status=200):
        self.tokenizer, self.model, self.owned_by, self.key = tokenizer, model, owned_by, key
        self.delay = delay
        self.models_status = models_status
        self.actions: collections.deque = collections.deque()  # one per completions request, then "ok"
        self.always: str | None = None  # an action for every completions request
        self.extra_token = False  # tokenise text with one token more than the tokenizer (another tokenizer)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()


def _handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def log_message(self, *args):  # the test's output stays lmmap's
            pass

        def _send(self, status, payload, headers=()):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if stub.key is None:
                return True
            got = self.headers.get("Authorization", "")
            if got == f"Bearer {stub.key}":
                return True
            # quotes the header it refused, as some servers do: lmmap must not repeat it
            self._send(401, {"error": {"message": f"invalid API key in header {got!r}"}})
            return False

        def do_GET(self):
            with stub.lock:
                stub.headers.append(dict(self.headers))
            if self.path == "/version":
                return self._send(200, {"version": "9.9.9-stub"})
            if self.path != "/v1/models":
                return self._send(404, {"detail": "Not Found"})
            if not self._authorised():
                return
            if stub.models_status != 200:
                return self._send(stub.models_status, {"error": {"message": "model list unavailable"}})
            self._send(200, {"object": "list", "data": [
                {"id": stub.model, "object": "model", "owned_by": stub.owned_by, "root": stub.model,
                 "max_model_len": CONTEXT + 1}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                action = stub.always or (stub.actions.popleft() if stub.actions else "ok")
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                self._answer(body, action)
            finally:
                with stub.lock:
                    stub.in_flight -= 1

        def _answer(self, body, action):
            if self.path != "/v1/completions":
                return self._send(404, {"detail": "Not Found"})
            if not self._authorised():
                return
            if stub.delay:
                time.sleep(stub.delay)
            if action == "drop":  # the connection dies before an answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if action == "slow":
                time.sleep(1.0)
            if action == "429":
                return self._send(429, {"error": {"message": "rate limited"}}, [("Retry-After", "0")])
            if action == "503":
                return self._send(503, {"error": {"message": "overloaded"}})
            if action == "echo400":
                return self._send(400, {"error": {"message": "echo is not supported with logprobs"}})
            if body.get("model") != stub.model:
                return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            prompt = body["prompt"]
            if isinstance(prompt, str):
                ids = list(stub.tokenizer(prompt)["input_ids"]) + ([7] if stub.extra_token else [])
            else:
                ids = [int(i) for i in prompt]
            if len(ids) + 1 > CONTEXT + 1:
                return self._send(400, {"error": {"message": f"This model's maximum context length is {CONTEXT} "
                                                             "tokens."}})
            a = np.asarray(ids, dtype=np.int64)
            values = [None] + logprob(a[:-1], a[1:]).tolist()
            if action == "count":
                values = values[:-1]
            tokens = [f"token_id:{i}" if body.get("return_tokens_as_token_ids") else f"t{i}" for i in ids]
            choice = {"index": 0, "text": "", "finish_reason": "length",
                      "logprobs": None if action == "nologprobs" else {"token_logprobs": values, "tokens": tokens}}
            if body.get("return_token_ids"):
                choice["prompt_token_ids"] = ids
            self._send(200, {"object": "text_completion", "model": stub.model, "choices": [choice]})

    return Handler


class LocalFormula:
    """The stand-in's formula as a local Scorer: what the server's numbers must sum to."""

    default_batch_tokens = 4096
    context_length = CONTEXT

    def __init__(self, tokenizer):
        self.tokenizer, self.name = tokenizer, "local"

    def prepare(self, probe_ids, batch_tokens):
        return {"mode": "formula", "batch_tokens": batch_tokens or self.default_batch_tokens}

    def score(self, ids, first):
        return np.array([logprob(r[f - 1:-1], r[f:]).sum() for r, f in zip(ids, first)], dtype=np.float64)

    def describe(self):
        return {}

    def close(self):
        pass


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, tiny_tokenizer):
    """A directory holding only the tokenizer: the id the stand-in serves, and what lmmap loads by default."""
    path = tmp_path_factory.mktemp("served") / "tiny-served"
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def server(tok_dir, tiny_tokenizer):
    """``(stub, base_url)`` of a stand-in on 127.0.0.1, stopped when the test ends."""
    servers = []

    def start(**kw):
        stub = Stub(tiny_tokenizer, str(tok_dir), **kw)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return stub, f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def texts(stdlib_texts):
    """Real texts: short ones and long ones that the 64-token context truncates."""
    from text_pieces import text_pieces

    return text_pieces(stdlib_texts[20:30], ((0, 15, 5), (500, 90, 13), (2000, 1500, 0)))


def _fast(**kw):
    """A backend that retries at once (the tests' servers fail on purpose)."""
    from lmmap.scoring.openai import OpenAIBackend

    return OpenAIBackend(**{"backoff": 0.001, "backoff_max": 0.01, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"convention": "full"}, {"stride": 24}], ids=["reference", "full", "strided"])
def test_sums_are_the_servers_prompt_logprobs_in_lmmaps_conventions(server, tok_dir, tiny_tokenizer, texts, kw):
    stub, url = server()
    scorer = _fast().load(str(tok_dir), base_url=url, concurrency=4)
    try:
        mine = score_texts(scorer, texts, **kw)
    finally:
        scorer.close()
    ref = score_texts(LocalFormula(tiny_tokenizer), texts, **kw)
    assert np.array_equal(mine[1], ref[1]) and np.array_equal(mine[2], ref[2])  # the same rows
    assert np.abs(mine[0] - ref[0]).max() < 1e-9
    if not kw:
        assert ref[2].sum() >= 5  # truncated texts were compared
    sent = [r for r in stub.requests if isinstance(r["prompt"], list)]
    assert sent and all(r["echo"] is True and r["max_tokens"] == 0 for r in sent)  # nothing generated
    assert all(len(r["prompt"]) <= CONTEXT for r in sent)
    texts_sent = [r for r in stub.requests if isinstance(r["prompt"], str)]
    assert len(texts_sent) == 1  # the tokenizer check: one text, sent once


def test_prompt_response_texts(server, tok_dir, tiny_tokenizer):
    from lmmap.scoring.encoding import encode_texts

    stub, url = server()
    prompts = ["Question: what is 2 + 2?", "Say hello."]
    answers = [" It is 4.", " Hello there, how are you?"]
    scorer = _fast().load(str(tok_dir), base_url=url)
    try:
        enc = encode_texts(scorer.tokenizer, answers, "reference", CONTEXT, None, prompts=prompts)
        from lmmap.scoring.compute import iter_scores

        mine = np.concatenate([p.loglik for p in iter_scores(scorer, answers, encoded=enc)])
        ref = np.concatenate([p.loglik for p in iter_scores(LocalFormula(tiny_tokenizer), answers, encoded=enc)])
    finally:
        scorer.close()
    assert np.abs(mine - ref).max() < 1e-9


def test_scored_into_a_store_with_the_server_in_the_record_and_never_the_key(server, tok_dir, texts, tmp_path,
                                                                            monkeypatch):
    stub, url = server(key=KEY)
    monkeypatch.setenv("LMMAP_TEST_KEY", KEY)
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    st = score_models(store, [str(tok_dir)], backend=_fast(), base_url=url, api_key_env="LMMAP_TEST_KEY",
                      concurrency=3)["tiny-served"]
    assert st.status == "scored", st
    rec = store.record("tiny-served")
    port = url.split(":")[2].split("/")[0]
    assert rec["backend"] == "openai" and rec["server"] == f"127.0.0.1:{port}"
    assert rec["served_model"] == str(tok_dir) and rec["server_version"] == "vllm 9.9.9-stub"
    assert rec["logprob_path"] == "openai completions echo logprobs" and rec["device"] == "server"
    assert rec["revision"] == f"served {tok_dir} at 127.0.0.1:{port}"
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in stub.headers if "models" not in h)
    # the key is in no file of the store: records, vectors, checkpoints, journals
    for path in store.path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert stub.max_in_flight <= 3


def test_concurrency_bounds_the_requests_in_flight(server, tok_dir, texts):
    stub, url = server(delay=0.02)
    scorer = _fast().load(str(tok_dir), base_url=url, concurrency=5)
    try:
        score_texts(scorer, texts)
    finally:
        scorer.close()
    assert 2 <= stub.max_in_flight <= 5


# -- a real server's failures ------------------------------------------------------------------------


def test_429_503_timeouts_and_dropped_connections_are_retried(server, tok_dir, tiny_tokenizer, texts):
    stub, url = server()
    stub.actions.extend(["ok", "429", "503", "drop", "slow", "ok", "429", "drop", "503"])
    scorer = _fast(timeout=0.3).load(str(tok_dir), base_url=url, concurrency=3)
    try:
        mine = score_texts(scorer, texts)[0]
        retries = scorer.describe()["request_retries"]
    finally:
        scorer.close()
    assert np.abs(mine - score_texts(LocalFormula(tiny_tokenizer), texts)[0]).max() < 1e-9
    assert retries >= 7


def test_a_server_that_keeps_failing_fails_the_model_in_one_line(server, tok_dir, texts, tmp_path):
    stub, url = server()
    stub.always = "503"
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    st = score_models(store, [str(tok_dir)], backend=_fast(max_tries=3), base_url=url)["tiny-served"]
    assert st.status == "failed" and "\n" not in st.message
    assert "failed 3 tries" in st.message and "HTTP 503: overloaded" in st.message
    assert store.model_names() == []


def test_an_unreachable_server_fails_fast_and_says_so(tok_dir, texts, tmp_path):
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    url = f"http://127.0.0.1:{_free_port()}/v1"
    t0 = time.perf_counter()
    st = score_models(store, [str(tok_dir)], backend="openai", base_url=url)["tiny-served"]
    assert time.perf_counter() - t0 < 5
    assert st.status == "failed" and "\n" not in st.message
    assert f"cannot reach the server at {url}" in st.message and "ConnectionRefusedError" in st.message
    assert "base_url" in st.params


@pytest.mark.parametrize("action", ["nologprobs", "echo400"])
def test_a_server_without_prompt_logprobs_says_what_it_needs(server, tok_dir, texts, action):
    stub, url = server()
    stub.always = action
    scorer = _fast().load(str(tok_dir), base_url=url)
    try:
        with pytest.raises(ScoringError) as e:
            score_texts(scorer, texts)
    finally:
        scorer.close()
    msg = str(e.value)
    assert "\n" not in msg and "`echo` with `logprobs`" in msg and "prompt_logprobs" in msg


def test_a_wrong_token_count_is_an_error_not_a_number(server, tok_dir, texts):
    stub, url = server()
    stub.actions.extend(["ok", "count"])  # the tokenizer check passes; a row's answer is one short
    scorer = _fast().load(str(tok_dir), base_url=url, concurrency=1)
    try:
        with pytest.raises(ScoringError, match=r"returned \d+ log-probabilities for a prompt of \d+ token ids"):
            score_texts(scorer, texts)
    finally:
        scorer.close()


def test_a_tokenizer_mismatch_is_one_line_naming_the_option(server, tok_dir, texts, tmp_path):
    stub, url = server()
    stub.extra_token = True
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    code, out, err = run_main("score", tok_dir, "--store", store.path, "--backend", "openai", "--base-url", url,
                              "--no-progress")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("failed tiny-served: ")
    assert "tokenises text differently from the local tokenizer" in lines[0]
    assert lines[0].endswith("pass the served model's own tokenizer as --tokenizer HUB_ID_OR_DIR")
    assert lines[1] == "error: 1 model(s) failed and were not stored: tiny-served (messages above)"
    assert not any(isinstance(r["prompt"], list) for r in stub.requests)  # refused before scoring a row


def test_a_model_the_server_does_not_serve(server, tmp_path, texts, tok_dir):
    stub, url = server()
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    st = score_models(store, ["org/other"], backend="openai", base_url=url, tokenizer=str(tok_dir))["org/other"]
    assert st.status == "failed" and f"is not served at {url} (it serves {str(tok_dir)!r})" in st.message


# -- the key -----------------------------------------------------------------------------------------


def test_a_missing_key_variable_is_one_line(server, tok_dir, texts, tmp_path, monkeypatch):
    stub, url = server(key=KEY)
    monkeypatch.delenv("LMMAP_NO_SUCH_KEY", raising=False)
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    code, out, err = run_main("score", tok_dir, "--store", store.path, "--backend", "openai", "--base-url", url,
                              "--api-key-env", "LMMAP_NO_SUCH_KEY", "--no-progress")
    assert code == 1
    assert ("failed tiny-served: model 'tiny-served': --api-key-env names the environment variable "
            "LMMAP_NO_SUCH_KEY, which is not set: set it to the server's API key") in err
    assert stub.requests == []  # nothing was sent without it


def test_a_refused_key_is_never_repeated(server, tok_dir, texts, tmp_path, monkeypatch):
    stub, url = server(key="the-right-key")
    monkeypatch.setenv("LMMAP_TEST_KEY", KEY)
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    st = score_models(store, [str(tok_dir)], backend="openai", base_url=url, api_key_env="LMMAP_TEST_KEY")
    msg = st["tiny-served"].message
    assert "refused the API key (HTTP 401" in msg and "api_key_env" in msg
    assert KEY not in msg and "***" in msg  # the server quoted it; lmmap does not
    st = score_models(store, [str(tok_dir)], backend="openai", base_url=url)["tiny-served"]
    assert "wants an API key" in st.message and "{api_key_env=NAME}" in st.message


def test_options_refuse_credentials_in_the_url_and_bad_concurrency():
    with pytest.raises(InputError) as e:
        ScoringOptions(backend="openai", base_url="http://user:hunter2@127.0.0.1:8000/v1")
    assert "hunter2" not in str(e.value) and "must not hold credentials" in str(e.value)
    with pytest.raises(InputError, match="concurrency must be a positive integer up to 1,024, got 0"):
        ScoringOptions(backend="openai", concurrency=0)
    with pytest.raises(InputError, match=r"backend='hf' cannot take a separate tokenizer \(tokenizer='x'\); "
                                         r"use backend='openai'"):
        ScoringOptions(tokenizer="x").check_for(__import__("lmmap.scoring.hf", fromlist=["HFBackend"]).HFBackend())
    from lmmap.scoring.openai import OpenAIBackend

    with pytest.raises(InputError, match="needs the server's address"):
        OpenAIBackend().load("m")
    with pytest.raises(InputError, match="device='cuda'"):
        ScoringOptions(backend="openai", device="cuda").check_for(OpenAIBackend())


# -- resuming ----------------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_from_its_checkpoint(server, tok_dir, tiny_tokenizer, texts, tmp_path):
    stub, url = server()
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    seen = []

    def stop_after_some(step):
        texts_done = step.info.get("texts", 0) if step.task else 0
        seen.append(texts_done)
        if texts_done >= 10:
            raise KeyboardInterrupt

    opts = dict(backend=_fast(), base_url=url, concurrency=2, batch_tokens=4 * CONTEXT, checkpoint_every=0)
    with pytest.raises(Interrupted, match="checkpoint chunk"):
        score_models(store, [str(tok_dir)], progress=stop_after_some, **opts)
    assert store.model_names() == [] and store.checkpoint_chunks("tiny-served") >= 1
    n_sent = len(stub.requests)
    st = score_models(store, [str(tok_dir)], **opts)["tiny-served"]
    assert st.status == "scored" and 1 <= st.n_resumed < len(texts) and st.n_scored == len(texts) - st.n_resumed
    assert len(stub.requests) - n_sent <= st.n_scored + 1  # the resumed texts were not sent again
    vec = store.vectors("tiny-served").sort_values("text_pos")["loglik"].to_numpy()
    assert np.abs(vec - score_texts(LocalFormula(tiny_tokenizer), texts)[0]).max() < 1e-9


def test_cli_score_backend_openai(server, tok_dir, tiny_tokenizer, texts, tmp_path):
    stub, url = server()
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    code, out, err = run_main("score", tok_dir, "--store", store.path, "--backend", "openai", "--base-url", url,
                              "--tokenizer", tok_dir, "--concurrency", "2", "--no-progress")
    assert code == 0, out + err
    assert "1 scored" in out
    vec = Store(store.path).vectors("tiny-served").sort_values("text_pos")["loglik"].to_numpy()
    assert np.abs(vec - score_texts(LocalFormula(tiny_tokenizer), texts)[0]).max() < 1e-9
    code, _, err = run_main("score", tok_dir, "--store", store.path, "--backend", "openai", "--concurrency", "0")
    assert code == 1 and err.strip().startswith("error: --concurrency must be a positive integer up to 1,024, got 0")
    code, _, err = run_main("score", tok_dir, "--store", store.path, "--backend", "hf", "--base-url", url)
    assert code == 1 and err.strip() == (f"error: --backend hf cannot reach a server (--base-url {url}); use "
                                         "--backend openai")
