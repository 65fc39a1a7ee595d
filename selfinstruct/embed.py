"""Sentence vectors for the semantic novelty gate, duplicate groups and topics.

Two kinds of `Embedder`, both returning L2-normalised float32 rows (so a dot product is the
cosine):

- `BundledEmbedder`: WordLlama's 256-d static model, whose weights and tokenizer ship inside the
  `wordllama` wheel. Offline, no key, deterministic. It is imported only when first used: importing
  `wordllama` calls `logging.basicConfig(level=INFO)`, which would make every library logger in the
  process print; `_import_wordllama` puts the root logger back as it found it.
- `EndpointEmbedder`: any OpenAI-compatible `/v1/embeddings`, through `llm.LLMClient` (the same
  key rule, retries, pacing, redaction and cost as generation).

`embedder_for(spec)` turns what a person types ("bundled", "off", "endpoint") into one of them.
Each embedder has a `name` (stored with its vectors: vectors of two embedders never mix) and `dim`.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .runner import Answered, Lane, Plan, Request, RequestRunner

BUNDLED = "bundled"
ENDPOINT = "endpoint"
OFF = "off"
BUNDLED_NAME = "wordllama-l2_supercat-256"
BUNDLED_DIM = 256


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot run here (the message says why and what happens instead)."""


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 as float32; a zero row (an empty text) stays zero rather than NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _import_wordllama():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    finally:
        # basicConfig adds a stream handler and sets INFO only when the root had none; undo both.
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return wordllama


class Embedder:
    """Texts in, one normalised float32 row per text out."""

    name: str
    dim: int
    kind: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def cost_usd(self) -> float:
        return 0.0

    def spec(self) -> "EmbedderSpec":
        return EmbedderSpec(kind=self.kind)


class BundledEmbedder(Embedder):
    kind = BUNDLED
    name = BUNDLED_NAME
    dim = BUNDLED_DIM
    _model = None
    _lock = threading.Lock()

    @classmethod
    def _load(cls):
        with cls._lock:
            if cls._model is None:
                try:
                    wordllama = _import_wordllama()
                    cls._model = wordllama.WordLlama.load(
                        cache_dir=Path(wordllama.__file__).parent, disable_download=True)
                except Exception as exc:  # an import error, a missing file, a failed source build
                    raise EmbedderUnavailable(
                        f"The bundled embedding model (WordLlama) could not be loaded here ({type(exc).__name__}: "
                        f"{exc}). Install wordllama==0.4.0.post1, or run without the semantic gate "
                        "(--cosine off).") from None
            return cls._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches of similar length pad less (a batch is as long as its longest text); padding
        # never changes a text's vector (the mean pools over its own tokens only).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = self._load().embed([texts[i] for i in order], norm=False, batch_size=64)
        out = np.empty_like(vectors)
        out[order] = vectors
        return normalise(out)


def bundled_available() -> str | None:
    """None when the bundled model loads; otherwise the sentence saying why not."""
    try:
        BundledEmbedder._load()
    except EmbedderUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class EmbedderSpec:
    """What a run stores about its embedder: enough to rebuild it on resume."""

    kind: str = BUNDLED
    model: str | None = None            # endpoint model name
    base_url: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": self.model, "base_url": self.base_url}

    @classmethod
    def from_dict(cls, data: dict | None) -> "EmbedderSpec":
        data = data or {}
        return cls(kind=data.get("kind", BUNDLED), model=data.get("model"), base_url=data.get("base_url"))


def endpoint_name(model: str, where: str) -> str:
    """An endpoint embedder's name in the pool: its model at its base URL (or backend kind)."""
    return f"{model.strip()}@{(where or '').strip().rstrip('/')}"


def bundled() -> BundledEmbedder:
    return BundledEmbedder()


class EndpointEmbedder(Embedder):
    """Vectors from an OpenAI-compatible `/v1/embeddings` (OpenAI, vLLM, Ollama, llama.cpp's
    server), `batch_size` texts a request and up to `concurrency` requests at once, through
    `llm.LLMClient.embed`: the Backend decides the key, the client retries, paces (429s lower
    the concurrency) and prices the tokens. The backend must be started. An endpoint's vectors
    may vary between calls; only the bundled embedder promises the same pool from the same answers."""

    kind = ENDPOINT

    def __init__(self, backend, model: str, *, batch_size: int = 64, concurrency: int = 4,
                 timeout_s: float = 60.0, max_retries: int = 5, rpm: float | None = None,
                 tpm: float | None = None, prices=None):
        from .llm import AdaptiveLimit, PriceTable

        if not (model or "").strip():
            raise ValueError("An endpoint embedder needs a model name (for example text-embedding-3-small).")
        if batch_size < 1:
            raise ValueError("The embedding batch size must be at least 1.")
        self.backend, self.model, self.batch_size = backend, model.strip(), int(batch_size)
        self.name = endpoint_name(self.model, backend.base_url or backend.kind)
        self._dim: int | None = None
        # Embedding answers are far larger than chat answers (a float per dimension per text).
        config = backend.llm_config(model=self.model, concurrency=concurrency, timeout_s=timeout_s,
                                    max_retries=max_retries, max_answer_bytes=64 * 1024 * 1024)
        self.pacer = AdaptiveLimit(concurrency, rpm=rpm, tpm=tpm)
        self.client = backend.client(config, prices=prices or PriceTable.default(), pacer=self.pacer)
        self._cost = 0.0
        self.tokens = 0

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self.embed(["How long is a piece of string?"])
        assert self._dim is not None
        return self._dim

    def spec(self) -> EmbedderSpec:
        return EmbedderSpec(kind=ENDPOINT, model=self.model, base_url=self.backend.base_url or None)

    def cost_usd(self) -> float:
        return self._cost

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from .control import run_coroutine

        texts = list(texts)
        # Servers refuse an empty input; an empty text gets a zero row (close to nothing).
        sent = [i for i, t in enumerate(texts) if t.strip()]
        batches = [[texts[i] for i in sent[k:k + self.batch_size]] for k in range(0, len(sent), self.batch_size)]

        answers = []
        if batches:
            plan = _Batches(Lane(self.client, self.pacer), batches)
            runner = RequestRunner(plan)
            run_coroutine(runner.stream())
            answers = [plan.answers[k] for k in range(len(batches))]
            self._cost += runner.cost
            self.tokens += runner.tokens
        rows = [v for a in answers for v in a.vectors]
        if rows:
            dim = len(rows[0])
            if self._dim is not None and dim != self._dim:
                raise ValueError(f"The endpoint's vectors changed length ({self._dim} then {dim}).")
            self._dim = dim
        out = np.zeros((len(texts), self._dim or 0), dtype=np.float32)
        if rows:
            out[sent] = np.asarray(rows, dtype=np.float32)
        return normalise(out) if len(texts) else out


class _Batches(Plan):
    """One `embed` call's batches as items of runner.RequestRunner: sent C at a time, 429s
    lowering C; a batch whose retries ran out raises LLMError (vectors are no stored job to
    resume: `ensure_vectors` stores each chunk as it gets it)."""

    def __init__(self, lane: Lane, batches: list[list[str]]):
        self.lane, self.batches, self.answers = lane, batches, {}

    def lanes(self) -> dict:
        return {0: self.lane}

    def open_items(self) -> list[dict]:
        return [{"id": k} for k in range(len(self.batches))]

    def request(self, item: dict) -> Request:
        texts = self.batches[item["id"]]
        return Request(lambda client: client.embed(texts))

    def on_answer(self, item: dict, sent, answer) -> Answered:
        self.answers[item["id"]] = answer
        return Answered()


def embedder_for(spec: "EmbedderSpec | dict | None", backend=None) -> Embedder | None:
    """The embedder a run's stored spec names (None: none). An endpoint needs the started
    `backend.Backend` that holds its key rule."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        spec = EmbedderSpec.from_dict(spec)
    if spec.kind == OFF:
        return None
    if spec.kind == BUNDLED:
        return bundled()
    if spec.kind == ENDPOINT:
        if backend is None:
            raise ValueError("An endpoint embedder needs a backend (its URL and key).")
        return EndpointEmbedder(backend, spec.model or "")
    raise ValueError(f"Unknown embedder kind {spec.kind!r}: use {BUNDLED}, {ENDPOINT} or {OFF}.")


def ensure_vectors(pool, embedder: Embedder, texts: Sequence[str], *, batch: int = 2048,
                   progress=None, stop=None) -> int:
    """Embed and store the texts among `texts` that have no vector from `embedder` yet, `batch` at
    a time (each batch committed on its own, so an interrupted backfill resumes where it stopped
    and nothing is embedded twice). `progress(done, total)` is called after each batch; `stop()`
    returning true ends early. Returns how many texts were embedded."""
    pool.embeddings.register(embedder.name, embedder.kind, embedder.dim, embedder.spec().to_dict())
    todo = pool.embeddings.missing(embedder.name, texts)
    done = 0
    if progress:
        progress(0, len(todo))
    for start in range(0, len(todo), batch):
        if stop and stop():
            break
        chunk = todo[start:start + batch]
        pool.embeddings.add(embedder.name, embedder.dim, chunk, embedder.embed(chunk), kind=embedder.kind)
        done += len(chunk)
        if progress:
            progress(done, len(todo))
    return done


def pool_vectors(pool, embedder: Embedder):
    """The pool's seed tasks and accepted candidates with their vectors (`store.PoolVectors`),
    embedding first whatever has none."""
    _, _, texts = pool.embeddings.pool_items()
    ensure_vectors(pool, embedder, texts)
    return pool.embeddings.pool_vectors(embedder.name)
