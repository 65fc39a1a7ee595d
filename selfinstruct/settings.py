"""What a run is told: the settings every job stores with itself (`StoredSettings`: a generation
run's `RunConfig` here, the judge's and an evaluation's in their modules), and the rules that
check them before anything is sent."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import local, prompts
from .backend import BACKEND_KINDS, LOCAL
from .filters import InstructionFilter
from .llm import RATE_LIMIT_PATIENCE_S, PriceTable, Sampling
from .model import COSINE_THRESHOLD, MAX_WORDS, MIN_WORDS, PAPER_KEYWORDS, ROUGE_THRESHOLD

GENERATION_MODES = ("selfinstruct", "alpaca")


STRUCTURED_SETTINGS = ("auto", "on", "off")


EXAMPLE_LAG = 2    # round N's generated examples come from rounds up to N - 2 (RunConfig.example_lag)


class StoredSettings:
    """Settings stored as JSON with a run (generation, judge, evaluation): `to_dict`, and
    `from_dict`, which ignores keys this version does not know (a file from another version)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunConfig(StoredSettings):
    """Everything that decides what a run does; stored with the run (no API key)."""
    model: str = "selfinstruct-demo"
    base_url: str = ""
    backend: str = "offline"            # offline | local | openai-compatible (backend.BACKEND_KINDS)
    gguf: str = ""                      # local: the GGUF file ("" = the bundled model)
    threads: int | None = None          # local: CPU threads (None: all cores)
    ctx_size: int | None = None         # local: tokens of context per request (None: local.DEFAULT_CTX_SIZE)
    mode: str = "chat"                  # chat | completion
    structured: str = "auto"            # chat mode: JSON answers with a schema: auto (probe once) | on | off
    generation: str = "selfinstruct"    # selfinstruct (numbered list) | alpaca (batch of full tasks)
    requests_per_round: int = 8
    human_examples: int = 6             # in-context seeds per prompt
    machine_examples: int = 2           # in-context generated instructions, once there are some
    new_per_request: int = 8            # the paper stops at item 16 after 8 examples
    batch_examples: int = 3             # Alpaca mode: example tasks per prompt
    batch_size: int = 20                # Alpaca mode: tasks asked for per request
    max_instances: int = 5
    rouge_threshold: float = ROUGE_THRESHOLD
    # The semantic gate (semantic.py): the embedder's spec (embed.EmbedderSpec; None: no vectors,
    # no gate) and the cosine above which a candidate is the same task reworded (None: gate off,
    # vectors still stored). Neither may change on resume: the same answers give the same pool.
    embedder: dict | None = field(default_factory=lambda: {"kind": "bundled"})
    cosine_threshold: float | None = COSINE_THRESHOLD
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    keywords: list[str] = field(default_factory=lambda: list(PAPER_KEYWORDS))
    sampling: dict = field(default_factory=lambda: Sampling().to_dict())
    classify_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=8, presence_penalty=0.0).to_dict())
    instance_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=600, presence_penalty=1.5).to_dict())
    concurrency: int = 8
    timeout_s: float = 60.0             # a deadline for each whole attempt, not per read
    max_retries: int = 5
    max_answer_bytes: int = 1_000_000   # larger answers are cut and rejected as "oversize"
    rpm: float | None = None            # the provider's requests-per-minute cap, if any
    tpm: float | None = None            # ... and tokens per minute
    example_lag: int = EXAMPLE_LAG      # round N takes generated examples from rounds <= N - lag; stored
                                        # with the run, never derived from concurrency (same seed, same pool)
    failure_streak: int = 3             # the run fails after this many requests in a row ran out of retries
    rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S   # nothing but 429s this long ends the run failed
    key_env: str = "OPENAI_API_KEY"     # the variable holding the API key (the key itself is never stored)
    batch: bool = False                 # send requests through the provider's Batch API
    batch_discount: float = 0.5         # batch price as a fraction of the list price
    batch_poll_s: float = 30.0
    batch_window: str = "24h"
    seed: int = 0
    steer: str = "off"                  # "coverage": in-context examples favour thin topics (topics.steer_examples)
    rounds: int | None = None           # stop after this many rounds (of this run)
    target: int | None = None           # stop when the pool holds this many generated instructions
    budget_usd: float | None = None
    budget_tokens: int | None = None
    price_per_m: list[float] | None = None   # [input, output] USD per 1M tokens; None: built-in table
    prompt_versions: dict = field(default_factory=prompts.version_table)

    @classmethod
    def from_dict(cls, data: dict):
        # A run stored before the semantic gate existed ran without one: resuming or re-filtering
        # it must not add one.
        if "cosine_threshold" not in data:
            data = {**data, "embedder": None, "cosine_threshold": None}
        return super().from_dict(data)

    def instruction_filter(self) -> InstructionFilter:
        return InstructionFilter(min_words=self.min_words, max_words=self.max_words,
                                 keywords=tuple(self.keywords))

    def price_table(self) -> PriceTable:
        """The built-in prices (editable defaults), with this run's own price for its model;
        in batch mode every price times `batch_discount`."""
        table = PriceTable.default()
        if self.price_per_m:
            table = table.with_price(self.model, *self.price_per_m)
        if self.batch:
            table = PriceTable({m: (p["input_per_m"] * self.batch_discount, p["output_per_m"] * self.batch_discount)
                                for m, p in table.to_dict().items()})
        return table

    def lag(self) -> int:
        """The example lag. The default, 2, is the README's rule and keeps a run's prompts, and so its
        pool, the same whatever the concurrency; a larger lag lets more rounds be in flight at once
        (busier slots at a high concurrency) but changes which examples later rounds see (measured:
        bench/README.md, engine). A run stored without one (before the lag was stored) gets 2."""
        return int(self.example_lag) if self.example_lag else EXAMPLE_LAG

    def validate(self) -> None:
        """Plain-words errors for settings that cannot work."""
        check_endpoint_settings(self)
        checks = [
            (self.example_lag is None or int(self.example_lag) >= 1, "The example lag must be at least 1 round."),
            (self.cosine_threshold is None or -1.0 <= self.cosine_threshold <= 1.0,
             "The cosine threshold must be between -1 and 1 (or off)."),
            (self.cosine_threshold is None or self.embedder is not None,
             "A cosine threshold needs an embedder."),
            (0 < self.batch_discount <= 1, "The batch discount must be in (0, 1]."),
            (self.batch_poll_s > 0, "The batch polling interval must be more than 0 seconds."),
            (self.requests_per_round >= 1, "Requests per round must be at least 1."),
            (self.steer in ("off", "coverage"), f"Steering must be off or coverage, not {self.steer!r}."),
            (not (self.batch and self.backend == LOCAL),
             "The local model has no Batch API: run it without batch mode."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def check_endpoint_settings(cfg) -> None:
    """Plain-words errors for the settings every run that sends requests has (generation, judge,
    evaluation): where requests go, how many at once, how long to wait, how often to retry.
    Settings a kind of run does not have (structured output, rate caps) are not checked."""
    checks = [
        (cfg.backend in BACKEND_KINDS, f"The backend must be one of {', '.join(BACKEND_KINDS)}."),
        (cfg.backend != "openai-compatible" or bool((cfg.base_url or "").strip()),
         "An OpenAI-compatible endpoint needs a base URL."),
        (cfg.backend == "offline" or bool((cfg.model or "").strip()), "Name the model to use."),
        (cfg.mode in ("chat", "completion"), "The mode must be chat or completion."),
        (getattr(cfg, "structured", "auto") in STRUCTURED_SETTINGS,
         f"Structured output must be one of {', '.join(STRUCTURED_SETTINGS)}."),
        (cfg.concurrency >= 1, "Concurrency must be at least 1."),
        (cfg.timeout_s > 0, "The timeout must be more than 0 seconds."),
        (cfg.max_retries >= 0, "Retries must be 0 or more."),
        (getattr(cfg, "max_answer_bytes", 1024) >= 1024, "The answer size limit must be at least 1024 bytes."),
        (cfg.failure_streak >= 1, "The failure streak must be at least 1."),
        (getattr(cfg, "rate_limit_patience_s", 1) > 0, "The rate-limit patience must be more than 0 seconds."),
        (getattr(cfg, "rpm", None) is None or cfg.rpm > 0, "Requests per minute must be more than 0."),
        (getattr(cfg, "tpm", None) is None or cfg.tpm > 0, "Tokens per minute must be more than 0."),
        (cfg.threads is None or cfg.threads >= 1, "Threads must be at least 1."),
        (cfg.ctx_size is None or cfg.ctx_size >= local.MIN_CTX_SIZE,
         f"The context size must be at least {local.MIN_CTX_SIZE} tokens."),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if cfg.backend == LOCAL:
        try:
            local.resolve_gguf(cfg.gguf)
        except local.LocalModelError as exc:
            raise ValueError(str(exc)) from None


# Settings a resumed run may change: where and how requests go, and when the run stops.
RESUMABLE_SETTINGS = ("backend", "base_url", "model", "key_env", "timeout_s", "max_retries", "concurrency",
                      "rpm", "tpm", "max_answer_bytes", "rounds", "target", "budget_usd", "budget_tokens",
                      "failure_streak", "rate_limit_patience_s", "batch_poll_s", "gguf", "threads", "ctx_size", "structured")
