"""The server backend: prompt log-probabilities from a model behind an OpenAI-compatible API (issue 26).

``lmmap score NAME --backend openai --base-url http://HOST:PORT/v1`` /
``score_models(..., backend="openai", base_url=...)``. ``NAME`` is the model
id the server serves (``GET /v1/models``); nothing is generated.

The convention is lm-evaluation-harness's ``local-completions`` model: a
``POST /completions`` with ``echo`` and ``logprobs`` returns, for every prompt
position ``p ≥ 1``, the log-probability of the prompt's own token given the
tokens before it. The tokenizer is on this side (``tokenizer``: a hub id or
directory; by default ``NAME``, then the path the server reports it loaded):
the driver tokenises, truncates, cuts strided windows and builds
prompt→response rows exactly as for the local backends, and each row is sent
as token ids, so that the server scores lmmap's rows, not its own reading of
the text. ``max_tokens`` is 0 (``echo`` without generation); a server that
refuses 0 is asked for 1 token, whose log-probability is dropped.

What is checked rather than trusted:

- once, before the first batch: the first row's text, sent as text, must be
  tokenised by the server into the ids the local tokenizer gives (compared id
  by id where the server returns ids, else by count); a mismatch is one line
  naming ``tokenizer``;
- every answer: one log-probability per prompt token, and (where the server
  echoes ids) the ids sent.

Real servers fail: requests are retried with exponential backoff (honouring
``Retry-After``) on HTTP 408/429/5xx, timeouts and dropped connections, and
at most ``concurrency`` rows are in flight at once (threads, one keep-alive
connection each). Only the first contact fails fast: an address where nothing
answers is reported at once instead of retried for a minute.

The API key is read from the environment variable named by ``api_key_env``
when a model is loaded and sent as ``Authorization: Bearer``; it is not kept
in the options, the record, a checkpoint key or any message (a server's error
text is scrubbed of it before it is shown).

vLLM's server (``python -m vllm.entrypoints.openai.api_server``) needs room
for one token after the prompt even with ``max_tokens=0``: a server started
with ``--max-model-len N`` scores rows of ``N - 1`` tokens. Start it with
``--max-model-len N+1`` (and ``VLLM_ALLOW_LONG_MAX_MODEL_LEN=1``) to score the
model's whole context N, as ``backend="hf"`` and ``backend="vllm"`` do, and
with ``--no-enable-prefix-caching`` (see :mod:`lmmap.scoring.vllm`).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring.bookkeeping import first_line
from lmmap.scoring.encoding import scored_positions

DEFAULT_CONCURRENCY = 8
# Rows per driver batch: enough for every worker to take several, so that a batch's last rows leave few
# workers idle; the driver checkpoints and reports progress between batches, so not many more.
ROWS_PER_WORKER = 4
TIMEOUT = 300.0  # seconds one request may take: a long row on a busy server
CONNECT_TIMEOUT = 10.0
MAX_TRIES = 8  # with the default backoff: ~1 minute of retries before a request is given up
BACKOFF = 0.5  # seconds before the first retry, doubled after each (with jitter), at most BACKOFF_MAX
BACKOFF_MAX = 20.0
RETRY_AFTER_MAX = 60.0
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DTYPES = ("float32", "bfloat16", "float16")
LOGPROB_PATH = "openai completions echo logprobs"
NEEDS = ("its /completions endpoint must return the prompt's log-probabilities: `echo` with `logprobs` "
         "(lm-evaluation-harness's local-completions convention), or vLLM's `prompt_logprobs`")
_TOKEN_ID = re.compile(r"token_id:(-?\d+)")


class _HTTPError(Exception):
    """A final (not retried) HTTP error answer: its status and the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class _Unreachable(Exception):
    """Nothing answered at the address (first contact only: later the same failure is retried)."""


class Client:
    """JSON over HTTP to one server: keep-alive connections per thread, retries with backoff.

    ``base_url``: ``http(s)://host[:port]/prefix`` (``/v1``). Paths are
    relative to it (``"completions"``); :meth:`root_get` reads one from the
    host's root (vLLM's ``/version``).
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT, max_tries: int = MAX_TRIES, backoff: float = BACKOFF,
                 backoff_max: float = BACKOFF_MAX):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host_name = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        # For records and messages: never credentials, query strings or fragments.
        self.host = f"{self.host_name}:{self.port}" if parts.port else self.host_name
        self.url = f"{parts.scheme}://{self.host}{self.prefix}"
        self._key = api_key or None
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self.max_tries, self.backoff, self.backoff_max = int(max_tries), float(backoff), float(backoff_max)
        self._local = threading.local()
        self._conns: set = set()
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()  # set by close(): a retry's wait ends at once
        self.retries = 0  # requests retried, over all threads (tests and records read it)

    # -- connections ----------------------------------------------------------------------------

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host_name, self.port, timeout=self.connect_timeout)
            conn.connect()
            # Connecting is quick or hopeless; an answer may take minutes on a busy server.
            conn.sock.settimeout(self.timeout)
            with self._lock:
                self._conns.add(conn)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        """Close every thread's connection: requests in flight fail at once, and nothing is retried any more."""
        self._closed = True
        self._stop.set()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.close()
            except OSError:  # a socket another thread is closing: closed either way
                pass

    # -- requests -------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` without the API key (a server may quote the header it refused)."""
        return text.replace(self._key, "***") if self._key else text

    def _once(self, method: str, path: str, body: dict | None) -> tuple[int, dict, bytes]:
        conn = self._connection()
        headers = {"Accept": "application/json", "User-Agent": "lmmap"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except BaseException:
            self._drop()  # a half-read answer leaves the connection unusable
            raise
        if resp.will_close:
            self._drop()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload

    def get(self, path: str, *, first_contact: bool = False) -> dict:
        return self.request("GET", f"{self.prefix}/{path}", None, first_contact=first_contact)

    def post(self, path: str, body: dict) -> dict:
        return self.request("POST", f"{self.prefix}/{path}", body)

    def root_get(self, path: str) -> dict | None:
        """One try at ``GET /path`` of the host (what the server says of itself); None if it does not answer so."""
        try:
            status, _, payload = self._once("GET", f"/{path}", None)
            return json.loads(payload) if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def request(self, method: str, path: str, body: dict | None, *, first_contact: bool = False) -> dict:
        """The JSON answer; retried on 408/429/5xx, timeouts and dropped connections.

        ``first_contact``: a connection that fails is :class:`_Unreachable` at once (fail fast on a wrong
        address). A final HTTP error is :class:`_HTTPError`; giving up after ``max_tries`` a
        :class:`ScoringError`.
        """
        t0 = time.monotonic()
        last = ""
        for attempt in range(self.max_tries):
            if self._closed:
                raise ScoringError(f"the requests to {self.url} were stopped")
            delay = None
            try:
                status, headers, payload = self._once(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                if self._closed:
                    raise ScoringError(f"the requests to {self.url} were stopped") from None
                if first_contact:
                    raise _Unreachable(f"{type(exc).__name__}: {first_line(exc)}") from exc
                last = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
            else:
                if 200 <= status < 300:
                    try:
                        return json.loads(payload)
                    except ValueError:
                        raise ScoringError(f"the server at {self.url} answered {path} with something that is not "
                                           f"JSON: {self.scrub(_snippet(payload))!r}") from None
                message = self.scrub(_error_message(payload))
                if status not in RETRY_STATUS:
                    raise _HTTPError(status, message)
                last = f"HTTP {status}: {message}"
                delay = _retry_after(headers.get("retry-after"))
            if attempt + 1 == self.max_tries:
                break
            if delay is None:
                delay = min(self.backoff * 2**attempt, self.backoff_max) * (0.5 + random.random() / 2)
            with self._lock:
                self.retries += 1
            self._stop.wait(delay)
        raise ScoringError(f"the server at {self.url} failed {self.max_tries} tries of {path} over "
                           f"{time.monotonic() - t0:.0f} s (last: {last})")


def _retry_after(value) -> float | None:
    """Seconds from a ``Retry-After`` header (its HTTP-date form is rare for APIs: backoff is used instead)."""
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX)
    except (TypeError, ValueError):
        return None


def _snippet(payload: bytes, n: int = 200) -> str:
    text = payload.decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else "(empty)"
    return first if len(first) <= n else first[:n] + "…"


def _error_message(payload: bytes) -> str:
    """The server's one-line reason: OpenAI's ``{"error": {"message": …}}``, FastAPI's ``detail``, or the text."""
    try:
        data = json.loads(payload)
    except ValueError:
        return _snippet(payload)
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err
        elif "detail" in data:
            err = data["detail"]
        if isinstance(err, str) and err.strip():
            return _snippet(err.encode())
    return _snippet(payload)


# -- the scorer ------------------------------------------------------------------------------------


class OpenAIScorer:
    """A served model as a :class:`~lmmap.scoring.protocol.Scorer`: each row one completions request."""

    def __init__(self, client: Client, tokenizer, *, name: str, served: dict, context_length: int,
                 concurrency: int, vllm: bool, server_version: str | None):
        self.client, self.tokenizer, self.name = client, tokenizer, name
        self.served = served
        self.context_length = int(context_length)
        self.concurrency = int(concurrency)
        self.default_batch_tokens = self.context_length * self.concurrency * ROWS_PER_WORKER
        self.vllm = vllm
        self.server_version = server_version
        self.max_tokens = 0
        self._checked = False
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lmmap-openai")

    def _body(self, prompt) -> dict:
        body = {"model": self.name, "prompt": prompt, "max_tokens": self.max_tokens, "echo": True,
                # logprobs=0 asks for the prompt token's own log-probability only; servers other than vLLM may
                # read 0 as "none", so they are asked for 1 (lm-evaluation-harness's choice).
                "logprobs": 0 if self.vllm else 1, "temperature": 0}
        if self.vllm:
            body["return_tokens_as_token_ids"] = True  # echoed tokens as ids: checked against the ids sent
        return body

    def _complete(self, prompt) -> dict:
        """The one choice of a completions request for ``prompt`` (token ids or text)."""
        try:
            answer = self.client.post("completions", self._body(prompt))
        except _HTTPError as exc:
            raise self._refusal(exc) from None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ScoringError(f"model {self.name!r}: the server at {self.client.url} answered a completions request "
                               f"without choices; {NEEDS}")
        return choices[0]

    def _refusal(self, exc: _HTTPError) -> ScoringError:
        text = exc.message
        low = text.lower()
        if exc.status in (401, 403):
            return _key_refused(self.client, exc)
        if "maximum context length" in low or "max_model_len" in low or "context length" in low:
            return ScoringError(f"model {self.name!r}: the server refused a row of lmmap's as longer than its context "
                                f"({text}); pass a smaller {{max_length}}", params=("max_length",))
        if any(w in low for w in ("echo", "logprobs", "prompt_logprobs")):
            return ScoringError(f"model {self.name!r}: the server at {self.client.url} refused to return the "
                                f"prompt's log-probabilities (HTTP {exc.status}: {text}); {NEEDS}")
        return ScoringError(f"model {self.name!r}: the server at {self.client.url} refused a completions request "
                            f"(HTTP {exc.status}: {text})")

    def prepare(self, probe_ids: np.ndarray, batch_tokens: int | None) -> dict:
        if not self._checked:
            self._check_tokenizer(np.asarray(probe_ids))
            self._checked = True
        return {"mode": LOGPROB_PATH, "batch_tokens": int(batch_tokens or self.default_batch_tokens)}

    def _check_tokenizer(self, probe_ids: np.ndarray) -> None:
        """Send the start of the first row as text: the server must tokenise it as the local tokenizer does.

        Also learns whether the server takes ``max_tokens=0`` (otherwise 1 is asked for and dropped).
        """
        tok = self.tokenizer
        # Short enough that, read back by either tokenizer, it fits any context.
        head = [int(i) for i in probe_ids[:min(48, self.context_length // 2)]]
        text = tok.decode(head, skip_special_tokens=True)
        if not text.strip():
            text = "lmmap probe: Hello, world. 123"
        local = [int(i) for i in tok(text, add_special_tokens=True)["input_ids"]]
        body = self._body(text)
        if self.vllm:
            body["return_token_ids"] = True
        try:
            try:
                answer = self.client.post("completions", body)
            except _HTTPError as exc:
                if exc.status != 400 or "max_tokens" not in exc.message:
                    raise
                self.max_tokens = 1
                answer = self.client.post("completions", dict(body, max_tokens=1))
        except _HTTPError as exc:
            raise self._refusal(exc) from None
        choice = (answer.get("choices") or [None])[0] if isinstance(answer, dict) else None
        if not isinstance(choice, dict):
            raise ScoringError(f"model {self.name!r}: the server at {self.client.url} answered a completions request "
                               f"without choices; {NEEDS}")
        logprobs = _prompt_logprobs(choice)
        if logprobs is None:
            raise self._no_logprobs()
        ids = choice.get("prompt_token_ids")
        if not isinstance(ids, list):
            ids = _echoed_ids(choice)
        # With max_tokens=1 the generated token follows the prompt's: not part of the tokenisation.
        extra = self.max_tokens if len(ids if ids is not None else logprobs) > len(local) else 0
        if ids is not None:
            ids = [int(i) for i in ids[:len(ids) - extra]]
        n_server = len(ids) if ids is not None else len(logprobs) - extra
        if (ids is not None and ids != local) or n_server != len(local):
            where = ""
            if ids is not None:
                k = next((i for i, (a, b) in enumerate(zip(ids, local)) if a != b), min(len(ids), len(local)))
                where = f", first differing at token {k}"
            name = getattr(tok, "name_or_path", "?")
            raise ScoringError(
                f"model {self.name!r}: the server tokenises text differently from the local tokenizer {name!r}: "
                f"{n_server} tokens there, {len(local)} here for the first text's opening{where}; pass the served "
                "model's own tokenizer as {tokenizer=HUB_ID_OR_DIR}", params=("tokenizer",))

    def _no_logprobs(self) -> ScoringError:
        return ScoringError(f"model {self.name!r}: the server at {self.client.url} returned no log-probabilities of "
                            f"the prompt; {NEEDS}")

    def score(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        """``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])`` per row: one request per row, ``concurrency`` at once."""
        B = len(ids)
        lengths = np.fromiter((len(r) for r in ids), np.int64, B)
        if lengths.max(initial=0) > self.context_length:
            raise InputError(f"max_length must be at most {self.context_length} (the context of the server's model) "
                             f"for {{backend='openai'}}, got rows of {int(lengths.max())} tokens",
                             params=("max_length", "backend"))
        futures = [self._pool.submit(self._row, r) for r in ids]
        rows = []
        try:
            for f in futures:
                rows.append(f.result())
        except BaseException:
            # One row failed for good (or Ctrl-C): the others' answers are not waited for.
            for f in futures:
                f.cancel()
            raise
        flat = np.concatenate(rows) if rows else np.zeros(0)
        offset = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(lengths - 1, out=offset[1:])
        row, pos = scored_positions(lengths, np.asarray(first, dtype=np.int64))
        return np.bincount(row, weights=flat[offset[row] + pos - 1], minlength=B).astype(np.float64)

    def _row(self, row: np.ndarray) -> np.ndarray:
        """The log-probabilities of positions 1..n-1 of ``row`` (float64), checked against what was sent."""
        n = len(row)
        choice = self._complete([int(i) for i in row])
        values = _prompt_logprobs(choice, row)
        if values is None:
            raise self._no_logprobs()
        if len(values) not in (n, n + self.max_tokens):
            raise ScoringError(f"model {self.name!r}: the server returned {len(values)} log-probabilities for a prompt "
                               f"of {n} token ids; it must echo one per prompt token ({NEEDS})")
        echoed = _echoed_ids(choice)
        if echoed is not None and [int(i) for i in echoed[:n]] != row.tolist():
            raise ScoringError(f"model {self.name!r}: the server echoed other token ids than the {n} it was sent; it "
                               "must take a prompt of token ids as they are")
        out = np.asarray(values[1:n], dtype=np.float64)
        if out.size and np.isnan(out).any():
            raise ScoringError(f"model {self.name!r}: the server left out log-probabilities of prompt tokens; {NEEDS}")
        return out

    def describe(self) -> dict:
        return {
            "device": "server",
            "architecture": None,
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "tokenizer_class": type(self.tokenizer).__name__,
            "backend": "openai",
            "server": self.client.host,
            "served_model": self.name,
            "served_model_root": self.served.get("root"),
            "served_by": self.served.get("owned_by"),
            "server_version": self.server_version,
            "server_max_model_len": self.served.get("max_model_len"),
            "concurrency": self.concurrency,
            "request_retries": self.client.retries,
        }

    def close(self) -> None:
        self.client.close()  # in-flight requests fail now instead of holding the process for their timeout
        self._pool.shutdown(wait=False, cancel_futures=True)


def _prompt_logprobs(choice: dict, row: np.ndarray | None = None) -> list | None:
    """The per-position log-probabilities of the echoed prompt (position 0 None → NaN), or None if absent.

    ``logprobs.token_logprobs`` (OpenAI's echo), else vLLM's ``prompt_logprobs`` (a dict per position, keyed by
    token id, which needs the ``row`` to pick the prompt's token).
    """
    lp = choice.get("logprobs")
    values = lp.get("token_logprobs") if isinstance(lp, dict) else None
    if isinstance(values, list) and values:
        return [np.nan if v is None else float(v) for v in values]
    plp = choice.get("prompt_logprobs")
    if isinstance(plp, list) and plp:
        out = [np.nan]
        for p, entry in enumerate(plp[1:], start=1):
            if not isinstance(entry, dict) or not entry:
                out.append(np.nan)
                continue
            key = str(int(row[p])) if row is not None and p < len(row) else None
            item = entry.get(key) if key is not None else next(iter(entry.values()))
            if item is None:
                out.append(np.nan)
                continue
            out.append(float(item["logprob"] if isinstance(item, dict) else item))
        return out
    return None


def _echoed_ids(choice: dict) -> list[int] | None:
    """The ids of the echoed tokens when the server gives them (vLLM's ``token_id:N``), else None."""
    lp = choice.get("logprobs")
    tokens = lp.get("tokens") if isinstance(lp, dict) else None
    if not isinstance(tokens, list) or not tokens:
        return None
    ids = []
    for t in tokens:
        m = _TOKEN_ID.fullmatch(t) if isinstance(t, str) else None
        if m is None:
            return None
        ids.append(int(m.group(1)))
    return ids


def _key_refused(client: Client, exc: _HTTPError) -> ScoringError:
    if client._key is None:
        return ScoringError(f"the server at {client.url} wants an API key (HTTP {exc.status}: {exc.message}): put it "
                            "in an environment variable and name that variable with {api_key_env=NAME}",
                            params=("api_key_env",))
    return ScoringError(f"the server at {client.url} refused the API key (HTTP {exc.status}: {exc.message}); check the "
                        "variable named by {api_key_env}", params=("api_key_env",))


# -- the backend -----------------------------------------------------------------------------------


class OpenAIBackend:
    """Scores models served behind an OpenAI-compatible completions API (vLLM's server, and others).

    Parameters (Python only; the defaults suit a server on the same network)
    ----------
    timeout : seconds one request may take before it is retried.
    connect_timeout : seconds to connect.
    max_tries : tries of one request (429, 5xx, timeouts, dropped connections) before scoring fails.
    backoff, backoff_max : seconds before the first retry, doubled after each, capped.
    """

    name = "openai"
    load_options = ("base_url", "api_key_env", "tokenizer", "concurrency")

    def __init__(self, *, timeout: float = TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 max_tries: int = MAX_TRIES, backoff: float = BACKOFF, backoff_max: float = BACKOFF_MAX):
        self.client_options = dict(timeout=timeout, connect_timeout=connect_timeout, max_tries=max_tries,
                                   backoff=backoff, backoff_max=backoff_max)
        self._revisions: dict[str, str] = {}

    def check(self, *, device: str, dtype: str) -> None:
        if str(device) != "auto":
            raise InputError(f"{{device={device!r}}} cannot be used with {{backend='openai'}}: the server runs the "
                             "model where it was started; leave the device at auto", params=("device", "backend"))
        if str(dtype) not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", params=("dtype",))

    def load(self, source: str, *, device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
             revision: str | None = None, device_map=None, logits_memory: int | None = None,
             base_url: str | None = None, api_key_env: str | None = None, tokenizer: str | None = None,
             concurrency: int | None = None) -> OpenAIScorer:
        if base_url is None:
            raise InputError("backend='openai' needs the server's address: pass {base_url=http://HOST:PORT/v1}",
                             params=("base_url",))
        if revision is not None:
            raise InputError("{revision} cannot be used with {backend='openai'}: the server serves the version of "
                             "the model it was started with", params=("revision", "backend"))
        if device_map is not None:
            raise InputError("{device_map} cannot be used with {backend='openai'}: the server places the model",
                             params=("device_map", "backend"))
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise InputError(f"{{api_key_env}} names the environment variable {api_key_env}, which is "
                                 f"{'empty' if api_key_env in os.environ else 'not set'}: set it to the server's "
                                 "API key", params=("api_key_env",))
        client = Client(base_url, key, **self.client_options)
        try:
            served = self._served(client, source)
            is_vllm = served.get("owned_by") == "vllm"
            version = None
            if is_vllm:
                got = client.root_get("version")
                if isinstance(got, dict) and got.get("version"):
                    version = f"vllm {got['version']}"
            tok = _load_tokenizer(source, tokenizer, served.get("root"), trust_remote_code)
            context = _context(served, tok, tokenizer or source)
            root = served.get("root")
            self._revisions[source] = (f"served {source}" + (f" from {root}" if root and root != source else "")
                                       + f" at {client.host}")
            return OpenAIScorer(client, tok, name=source, served=served, context_length=context,
                                concurrency=concurrency or DEFAULT_CONCURRENCY, vllm=is_vllm,
                                server_version=version)
        except BaseException:
            client.close()
            raise

    @staticmethod
    def _served(client: Client, source: str) -> dict:
        """The server's entry for model ``source`` (``GET /models``); ``{}`` from a server that lists none."""
        try:
            answer = client.get("models", first_contact=True)
        except _Unreachable as exc:
            raise ScoringError(f"model {source!r}: cannot reach the server at {client.url} ({exc}); is it running, and "
                               "is {base_url} its address?", params=("base_url",)) from None
        except _HTTPError as exc:
            if exc.status in (401, 403):
                raise _key_refused(client, exc) from None
            if exc.status == 404:  # a server without the model list: the completions request will tell
                return {}
            raise ScoringError(f"model {source!r}: the server at {client.url} answered GET /models with HTTP "
                               f"{exc.status}: {exc.message}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            return {}
        listed = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        for m in listed:
            if m["id"] == source:
                return m
        ids = ", ".join(repr(m["id"]) for m in listed[:10]) or "none"
        raise ScoringError(f"model {source!r} is not served at {client.url} (it serves {ids}); score the id the "
                           "server lists")

    def revision(self, source: str, revision: str | None) -> str:
        # What identifies the weights is the server's: the id it serves, what it loaded, where it runs.
        return self._revisions.get(source, f"served {source}")

    def failure_hint(self, exc: BaseException) -> tuple[str, tuple[str, ...]]:
        return "", ()


def _load_tokenizer(source: str, tokenizer: str | None, root: str | None, trust_remote_code: bool):
    """The tokenizer on this side: ``tokenizer``, else the served id, else the path the server loaded."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    candidates = [tokenizer] if tokenizer else [c for c in (source, root) if c]
    errors = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a missing tokenizer's retries are lmmap's one line, not transformers' log
    try:
        for cand in dict.fromkeys(candidates):
            path = Path(cand).expanduser()
            if not path.exists() and (cand.startswith((".", "/", "~")) or cand.count("/") > 1):
                errors.append(f"{cand!r}: no such directory")
                continue
            try:
                return AutoTokenizer.from_pretrained(str(path) if path.exists() else cand,
                                                     trust_remote_code=trust_remote_code)
            except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError ...
                errors.append(f"{cand!r}: {type(exc).__name__}: {first_line(exc)}")
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer:
        raise InputError(f"tokenizer {tokenizer!r} could not be loaded ({errors[0] if errors else 'no tokenizer'}); "
                         "pass a hub id or a directory with the served model's tokenizer files", params=("tokenizer",))
    raise ScoringError(f"model {source!r}: no tokenizer for it here ({'; '.join(errors)}); pass the served model's "
                       "tokenizer as {tokenizer=HUB_ID_OR_DIR}", params=("tokenizer",))


def _context(served: dict, tokenizer, where: str) -> int:
    """Rows' longest length: what the server takes (vLLM: ``max_model_len`` less the one position it keeps
    for a token after the prompt), no more than the model's own context when its config is at hand."""
    limits = []
    n = served.get("max_model_len")
    if isinstance(n, int) and n > 1:
        limits.append(n - 1)
    own = _config_context(where)
    if own is not None:
        limits.append(own)
    if not limits:
        m = getattr(tokenizer, "model_max_length", None)
        if isinstance(m, int) and 1 < m < 10**7:
            limits.append(m)
    return min(limits) if limits else 2048


def _config_context(where: str) -> int | None:
    """The context length in the config next to the tokenizer (as the HF backend reads it), if there is one."""
    path = Path(where).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = config.get(attr) if isinstance(config, dict) else None
        if isinstance(v, int) and v > 0:
            return v
    return None
