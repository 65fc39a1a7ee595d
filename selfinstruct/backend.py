"""Where a run's requests go: one object that resolves the API key, starts and stops the
offline demo server, and builds the clients (the streaming `LLMClient` and the plain
`AsyncOpenAI` that batch mode uses).

The key is never stored with a run. It is, in order: the key given to the Backend (typed in
the app, held in that browser session only), else the environment variable named by
``api_key_env`` (OPENAI_API_KEY by default), else a placeholder that local servers ignore.
The offline demo server is a loopback process of our own: it never receives a user's key.

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

from .llm import PLACEHOLDER_API_KEY, AdaptiveLimit, LLMClient, LLMConfig, PriceTable, http_client

OFFLINE = "offline"
OPENAI_COMPATIBLE = "openai-compatible"
BACKEND_KINDS = (OFFLINE, OPENAI_COMPATIBLE)
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
    env_key_any_url: bool = False   # True only for the CLI: its user owns the environment's key
    _server: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise ValueError(f"backend must be one of {', '.join(BACKEND_KINDS)}, not {self.kind!r}")
        if self.kind != OFFLINE and not (self.base_url or "").strip():
            raise ValueError("An OpenAI-compatible backend needs a base URL (for example "
                             "https://api.openai.com/v1 or http://localhost:8000/v1).")

    @classmethod
    def for_run(cls, config: dict, *, api_key: str | None = None,
                api_key_env: str | None = None, env_key_any_url: bool = False) -> "Backend":
        """The backend a stored run configuration names."""
        return cls(kind=config.get("backend") or OFFLINE, base_url=config.get("base_url") or "",
                   api_key=api_key, api_key_env=api_key_env or config.get("key_env") or DEFAULT_API_KEY_ENV,
                   seed=int(config.get("seed") or 0), env_key_any_url=env_key_any_url)

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
        if self.kind == OFFLINE and not self.base_url:
            if self._server is None:
                raise RuntimeError("Start the offline backend first (Backend.start()).")
            return self._server.base_url
        return self.base_url.strip().rstrip("/")

    @property
    def description(self) -> str:
        if self.kind == OFFLINE:
            return "the offline demo server (replays bundled examples; not a language model)"
        return self.url

    # -- clients ---------------------------------------------------------------------
    def llm_config(self, *, model: str, mode: str = "chat", concurrency: int = 8, timeout_s: float = 60.0,
                   max_retries: int = 5, max_answer_bytes: int = 1_000_000) -> LLMConfig:
        return LLMConfig(base_url=self.url, model=model, api_key=self.resolved_api_key(), mode=mode,
                         concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                         max_answer_bytes=max_answer_bytes)

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
