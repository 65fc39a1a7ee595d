"""Where a run's requests go: one object that resolves the API key, starts and stops the
offline demo server, and builds the clients (the streaming `LLMClient` and the plain
`AsyncOpenAI` that batch mode uses).

The key is never stored with a run. It is, in order: the key given to the Backend (typed in
the app, held in that browser session only), else the environment variable named by
``api_key_env`` (OPENAI_API_KEY by default), else a placeholder that local servers ignore.
The offline demo server and the local model (llama.cpp on 127.0.0.1, see local.py) are
loopback servers of our own: they never receive the environment's key.

Where the server's environment key may go (the one home of this rule): anyone who can open the
app can type a base URL, so the environment's key is sent only to an endpoint the owner chose,
`owner_endpoints()`: OpenAI's (OPENAI_URL) and the base URL in $SELFINSTRUCT_BASE_URL, compared
exactly (after dropping a trailing slash). Any other URL gets only a key typed with it, or the
placeholder. The CLI is run by the machine's own user, who may send their key anywhere: it
builds its Backend with ``env_key_any_url=True``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import openai

from .llm import PLACEHOLDER_API_KEY, RATE_LIMIT_PATIENCE_S, AdaptiveLimit, LLMClient, LLMConfig, PriceTable, http_client
from .local import DEFAULT_SLOTS

OFFLINE = "offline"
LOCAL = "local"
OPENAI_COMPATIBLE = "openai-compatible"
BACKEND_KINDS = (OFFLINE, LOCAL, OPENAI_COMPATIBLE)
# Servers this process starts itself: no base URL or model name to type, no key to send.
OWN_SERVERS = (OFFLINE, LOCAL)

# What a new run on each kind uses unless told otherwise. The local model writes in the
# paper's completion mode (a small chat model answers the tasks instead of listing new ones);
# its server answers DEFAULT_SLOTS requests at once, so more in flight would only queue,
# and a CPU needs a longer deadline than a hosted endpoint.
_LOCAL_DEFAULTS = {"mode": "completion", "concurrency": DEFAULT_SLOTS, "timeout_s": 300.0}
_DEFAULTS = {"mode": "chat", "concurrency": 8, "timeout_s": 60.0}


def defaults_for(kind: str) -> dict:
    """Run settings whose default depends on the backend: mode, concurrency, timeout_s."""
    return dict(_LOCAL_DEFAULTS if kind == LOCAL else _DEFAULTS)


DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
OPENAI_URL = "https://api.openai.com/v1"
BASE_URL_ENV = "SELFINSTRUCT_BASE_URL"


def _same_url(url: str) -> str:
    return (url or "").strip().rstrip("/")


def owner_endpoints() -> tuple[str, ...]:
    """The base URLs the server's environment key may be sent to from the app."""
    owner = _same_url(os.environ.get(BASE_URL_ENV, ""))
    return (OPENAI_URL, owner) if owner else (OPENAI_URL,)


def owner_base_url() -> str:
    """The endpoint the owner set in $SELFINSTRUCT_BASE_URL ('' when none): the app offers it."""
    return _same_url(os.environ.get(BASE_URL_ENV, ""))


@dataclass
class Backend:
    kind: str = OFFLINE
    base_url: str = ""
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str = DEFAULT_API_KEY_ENV
    seed: int = 0
    gguf: str = ""                      # local: the model file ("" = the bundled one)
    threads: int | None = None          # local: CPU threads (None: all cores)
    ctx_size: int | None = None         # local: tokens of context per request
    env_key_any_url: bool = False   # True only for the CLI: its user owns the environment's key
    _server: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise ValueError(f"backend must be one of {', '.join(BACKEND_KINDS)}, not {self.kind!r}")
        if self.kind == OPENAI_COMPATIBLE and not (self.base_url or "").strip():
            raise ValueError("An OpenAI-compatible backend needs a base URL (for example "
                             "https://api.openai.com/v1 or http://localhost:8000/v1).")

    @classmethod
    def for_run(cls, config: dict, *, api_key: str | None = None,
                api_key_env: str | None = None, env_key_any_url: bool = False) -> "Backend":
        """The backend a stored run configuration names."""
        return cls(kind=config.get("backend") or OFFLINE, base_url=config.get("base_url") or "",
                   api_key=api_key, api_key_env=api_key_env or config.get("key_env") or DEFAULT_API_KEY_ENV,
                   seed=int(config.get("seed") or 0), env_key_any_url=env_key_any_url,
                   gguf=config.get("gguf") or "", threads=config.get("threads"),
                   ctx_size=config.get("ctx_size"))

    # -- key ---------------------------------------------------------------------
    def env_key_allowed(self) -> bool:
        """Whether the environment's key may go to this backend's URL (see the module docstring).
        Only the OpenAI-compatible kind ever gets it: our own servers need no key."""
        if self.kind != OPENAI_COMPATIBLE:
            return False
        return self.env_key_any_url or _same_url(self.base_url) in owner_endpoints()

    def resolved_api_key(self) -> str:
        if self.api_key:   # typed by this session's user, for the URL they chose
            return self.api_key
        if self.env_key_allowed():
            return os.environ.get(self.api_key_env or DEFAULT_API_KEY_ENV) or PLACEHOLDER_API_KEY
        return PLACEHOLDER_API_KEY

    def api_key_source(self) -> str:
        """Where the key comes from, safe to show: 'typed', the variable's name, or 'none'."""
        if self.api_key:
            return "typed"
        if self.env_key_allowed() and os.environ.get(self.api_key_env or DEFAULT_API_KEY_ENV):
            return f"${self.api_key_env or DEFAULT_API_KEY_ENV}"
        return "none"

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "Backend":
        if self.kind == OFFLINE and self._server is None and not self.base_url:
            from .offline import OfflineServer

            self._server = OfflineServer(seed=self.seed).start()
        elif self.kind == LOCAL and self._server is None:
            from .local import LocalModel

            self._server = LocalModel(self.gguf, threads=self.threads, ctx_size=self.ctx_size).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> "Backend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL requests go to (the offline server's changes from one start to the next)."""
        if (self.kind == OFFLINE and not self.base_url) or self.kind == LOCAL:
            if self._server is None:
                raise RuntimeError(f"Start the {self.kind} backend first (Backend.start()).")
            return self._server.base_url
        return self.base_url.strip().rstrip("/")

    @property
    def description(self) -> str:
        if self.kind == OFFLINE:
            return "the offline demo server (replays bundled examples; not a language model)"
        if self.kind == LOCAL:
            from . import local

            if not self.gguf or local.model_name(self.gguf) == local.model_name(None):
                return (f"the bundled local model {local.BUNDLED_FILE} via llama.cpp on this machine "
                        "(a small model for trying the loop; use a bigger GGUF or an endpoint for a "
                        "real dataset)")
            return f"the local model {self.gguf} via llama.cpp on this machine"
        return self.url

    # -- clients ---------------------------------------------------------------------
    def llm_config(self, *, model: str, mode: str = "chat", concurrency: int = 8, timeout_s: float = 60.0,
                   max_retries: int = 5, max_answer_bytes: int = 1_000_000,
                   rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S) -> LLMConfig:
        return LLMConfig(base_url=self.url, model=model, api_key=self.resolved_api_key(), mode=mode,
                         concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                         max_answer_bytes=max_answer_bytes, rate_limit_patience_s=rate_limit_patience_s)

    def client(self, config: LLMConfig, prices: PriceTable | None = None,
               pacer: AdaptiveLimit | None = None) -> LLMClient:
        return LLMClient(config, prices=prices, pacer=pacer)

    def openai_client(self, config: LLMConfig, *, max_answer_bytes: int | None = None) -> openai.AsyncOpenAI:
        """A plain AsyncOpenAI (files, batches) with the same key and deadline; `None` lifts the
        answer cap (a batch's output file holds many answers and is read line by line)."""
        if max_answer_bytes is None:
            config = replace(config, max_answer_bytes=2**40)
        return openai.AsyncOpenAI(base_url=config.base_url, api_key=config.resolved_api_key(),
                                  max_retries=2, timeout=config.timeout_s, http_client=http_client(config))

    def check(self, *, model: str, mode: str = "chat", timeout_s: float = 15.0) -> str:
        """Test the connection (no retries): one line on success, LLMError otherwise."""
        started = self._server is None
        self.start()
        try:
            config = self.llm_config(model=model, mode=mode, timeout_s=timeout_s, max_retries=0)
            return LLMClient(config).check_sync()
        finally:
            if started:
                self.stop()
