"""The model judge (issue 17): a configured endpoint answers the quality study's three questions
(model.QUESTIONS: valid task? input appropriate? output acceptable?) for a study's items or for the
whole pool (accepted candidates, one kept instance each).

A judge run is planned whole when it is created (`start_judge`: one verdict row per item, in one
transaction) and then driven by `JudgeRunner`: up to `concurrency` requests in flight
(`llm.AdaptiveLimit` lowers it while the endpoint answers 429, as in the engine), each answer
stored the moment it arrives, with the prompt as sent, its version, the parser version that read
it, the three answers (or why they could not be read: never a guess), tokens, cost and latency.
A killed process resumes from the rows alone: answered items are never sent again, nothing is
stored twice. A request whose retries ran out keeps its error and is sent again later;
`failure_streak` such requests in a row, or one item failing three times, end the run *failed*
with the next step. Fatal errors (key, model, URL) fail it at once.

Structured output as in generation (`JudgeConfig.structured` auto | on | off): completion mode is
always the text layout; `auto` sends one probe request at the run's first start (pipeline's
`probe_structured`) and the decision is stored with the run (`judge_runs.structured`).

Verdicts live in `judge_verdicts`, never in `labels`: nothing a person sees as a label, no
majority, no "labeled invalid" counts a judge. `answer_rates` and `calibrate_run` summarise a
run for the CLI and the page; calibration against people lives in selfinstruct/calibration.py.

Servers and keys go through `backend.Backend` (its key rule), never the environment directly.
One job per pool: a judge run and a generation run of the same pool never go on at once in one
process (`active_judge`, `control.active_run`; jobs.JobManager refuses either while the other is
busy), and DuckDB keeps other processes out of the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import parsing, prompts
from .backend import OFFLINE, Backend
from .llm import RATE_LIMIT_PATIENCE_S, AdaptiveLimit, Completion, PriceTable, Sampling
from .model import ALL_VALID, NO, QUESTIONS, RESUMABLE_STATUSES, UNSURE, YES
from .pipeline import NEXT_STEPS, probe_until_answered
from .control import Event, RunControl, active_of
from .settings import StoredSettings, check_endpoint_settings
from .runner import (MAX_FAILURES_PER_ITEM, RETRY_COOLDOWN_S, UNREADABLE_CHECK, Answered,  # noqa: F401 (their home)
                     Plan, Request, RequestRunner, lane_for)
from .store import Pool

SCOPE_STUDY = "study"
SCOPE_POOL = "pool"
SCOPES = (SCOPE_STUDY, SCOPE_POOL)
GONE = "the item is no longer in the pool (its candidate was deleted)"


@dataclass
class JudgeConfig(StoredSettings):
    """Everything that decides what a judge run sends; stored with the run (never the key:
    `key_env` names the variable holding it)."""
    backend: str = OFFLINE              # offline | local | openai-compatible (backend.BACKEND_KINDS)
    base_url: str = ""
    model: str = "selfinstruct-demo"
    mode: str = "chat"                  # chat | completion
    structured: str = "auto"            # chat mode: JSON answers with a schema: auto (probe once) | on | off
    concurrency: int = 8
    timeout_s: float = 60.0             # a deadline for each whole attempt
    max_retries: int = 5
    max_answer_bytes: int = 1_000_000
    rpm: float | None = None
    tpm: float | None = None
    failure_streak: int = 3
    rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S   # nothing but 429s this long ends the run
    key_env: str = "OPENAI_API_KEY"
    price_per_m: list[float] | None = None   # [input, output] USD per 1M tokens; None: built-in table
    seed: int = 0
    gguf: str = ""                      # local: the GGUF file ("" = the bundled model)
    threads: int | None = None
    ctx_size: int | None = None
    sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=256, presence_penalty=0.0).to_dict())
    prompt_versions: dict = field(default_factory=lambda: dict(prompts.JUDGE_VERSIONS))
    parser_version: str = parsing.PARSER_VERSIONS[prompts.STAGE_JUDGE]

    def price_table(self) -> PriceTable:
        return PriceTable.for_model(self.model, self.price_per_m)

    def validate(self) -> None:
        """Plain-words errors for settings that cannot work (the endpoint's, as a generation run's)."""
        check_endpoint_settings(self)
        if not parsing.has_parser(prompts.STAGE_JUDGE, self.parser_version):
            raise ValueError(f"This version of selfinstruct has no judge parser {self.parser_version}.")


# Settings a resumed judge run may change: where and how requests go.
RESUMABLE_JUDGE_SETTINGS = ("backend", "base_url", "model", "key_env", "timeout_s", "max_retries", "concurrency",
                            "rpm", "tpm", "max_answer_bytes", "failure_streak", "rate_limit_patience_s", "gguf", "threads", "ctx_size",
                            "structured", "price_per_m", "mode")


@dataclass
class JudgeOutcome:
    judge_run_id: int
    status: str             # finished | paused | stopped | failed
    stop_reason: str
    done: int               # items answered (readable or not)
    total: int
    unparseable: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    next_step: str = ""     # what to do now, in plain words (failed and paused runs)


def resume_judge_command(judge_run_id: int) -> str:
    return f"selfinstruct judge --resume {judge_run_id}"


JUDGE_NEXT_STEPS = {
    **NEXT_STEPS,
    "rate_limit": "Wait a while or lower the concurrency (--concurrency), then resume.",
    "context_length": "Judge with a model that has a longer context (an item is too long for this one).",
    "unparseable": "The model's answers cannot be read: try structured output (--structured on), the other "
                   "mode (--mode), or a bigger model, then resume.",
}


def _next_step(kind: str, judge_run_id: int) -> str:
    return (f"{JUDGE_NEXT_STEPS.get(kind, 'Fix the cause, then resume.')} "
            f"Resume with: {resume_judge_command(judge_run_id)}")


def active_judge(pool: Pool) -> int | None:
    """The judge run going on in this process for this pool file, if any (one job per pool:
    control.exclusive_job)."""
    return active_of(pool, "judge")


# -- creating and configuring runs ----------------------------------------------------------------
def start_judge(pool: Pool, config: JudgeConfig, scope: str, study_id: int | None = None,
                limit: int | None = None, *, name: str | None = None, actor: str = "user") -> int:
    """Store a judge run and plan its items: a study's items in study order (scope 'study'), or
    the pool's accepted candidates with a kept instance, its first one each, in candidate order
    (scope 'pool'); the first `limit` of them when given. Returns the judge run's id; raises
    ValueError in plain words."""
    config.validate()
    if scope not in SCOPES:
        raise ValueError(f"The scope must be one of {', '.join(SCOPES)}.")
    if limit is not None and limit < 1:
        raise ValueError("The limit must be at least 1 item.")
    if scope == SCOPE_STUDY:
        if study_id is None or pool.quality.study(study_id) is None:
            raise ValueError(f"There is no study {study_id}." if study_id is not None else "Choose a study to judge.")
        items = pool.judge.study_items(study_id, limit)
        if not items:
            raise ValueError(f"Study {study_id} has no items.")
    else:
        study_id = None
        items = pool.judge.pool_items(limit)
        if not items:
            raise ValueError("The pool has no accepted generated instruction with a kept instance to judge.")
    return pool.judge.create_run(scope=scope, study_id=study_id, config=config.to_dict(), items=items,
                                 name=name, actor=actor)


ANSWER_TOKENS_GUESS = 40       # tokens of a verdict (three answers and a one-sentence reason), before any is stored


@dataclass
class JudgeEstimate:
    items: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    basis: str

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_judge(pool: Pool, config: JudgeConfig, scope: str, study_id: int | None = None,
                   limit: int | None = None) -> JudgeEstimate:
    """Tokens and cost before a judge run: the prompts' sizes (characters / 4, as the offline
    server counts) and, per answer, the mean of this model's earlier verdicts in the pool (else a
    guess of ANSWER_TOKENS_GUESS)."""
    items = (pool.judge.study_items(study_id, limit) if scope == SCOPE_STUDY and study_id is not None
             else pool.judge.pool_items(limit))
    texts = pool.judge.item_texts([(c, i) for c, i, _ in items])
    structured = config.mode == "chat" and config.structured == "on"
    prompt_tokens = sum(-(-len(prompts.build_judge_prompt(t["instruction"] or "-", t["input"] or "", t["output"] or "",
                                                          structured=structured).full_text()) // 4)
                        for t in texts)
    mean = pool.judge.answer_tokens(config.model)
    per_answer = mean if mean is not None else ANSWER_TOKENS_GUESS
    completion_tokens = int(round(per_answer * len(items)))
    cost = config.price_table().cost(config.model, prompt_tokens, completion_tokens)
    basis = (f"answers from earlier verdicts of {config.model} in this pool" if mean is not None
             else f"answers guessed at {ANSWER_TOKENS_GUESS} tokens each")
    return JudgeEstimate(len(items), prompt_tokens, completion_tokens, cost, f"prompts counted; {basis}")


@dataclass
class JudgeView:
    """What a page shows about one judge run, in one call (see `judge_view`)."""
    run: dict                   # the judge_runs row (config as a dict)
    progress: dict              # Pool.judge_progress: total, answered, parsed, unparseable, pending, failing
    usage: dict                 # Pool.judge_usage: answers, prompt/completion tokens, tokens, cost_usd, latency_s
    rates: dict                 # answer_rates: per question yes / no / unsure / n / yes_rate; "_unparseable"
    calibration: dict | None    # calibrate_run: per question calibration.Calibration (a labeled study only)
    resume_command: str


def judge_view(pool: Pool, judge_run_id: int) -> JudgeView:
    run = pool.judge.run(judge_run_id)
    if run is None:
        raise ValueError(f"There is no judge run {judge_run_id}.")
    return JudgeView(run, pool.judge.progress(judge_run_id), pool.judge.usage(judge_run_id),
                     answer_rates(pool, judge_run_id), calibrate_run(pool, judge_run_id),
                     resume_judge_command(judge_run_id))


def apply_judge_overrides(pool: Pool, judge_run_id: int, overrides: dict, *, actor: str = "user") -> JudgeConfig:
    """Change a stored judge run's resumable settings (audited); returns its configuration."""
    run = pool.judge.run(judge_run_id)
    if run is None:
        raise ValueError(f"There is no judge run {judge_run_id} in {pool.path}.")
    unknown = set(overrides) - set(RESUMABLE_JUDGE_SETTINGS)
    if unknown:
        raise ValueError(f"These settings cannot change when a judge run resumes: {', '.join(sorted(unknown))}.")
    stored = run["config"]
    changes = {k: (stored.get(k), v) for k, v in overrides.items() if stored.get(k) != v}
    config = JudgeConfig.from_dict({**stored, **overrides})
    config.validate()
    if changes:
        pool.judge.update_config(judge_run_id, config.to_dict(), changes, actor=actor)
    return config


def resumable_judge_runs(pool: Pool) -> list[dict]:
    """Judge runs that ended before every item was answered (interrupted, paused, failed, stopped)."""
    return [r for r in pool.judge.runs() if r["status"] in RESUMABLE_STATUSES and r["answered"] < r["items"]]


# -- the runner ------------------------------------------------------------------------------------
class JudgeRunner(Plan):
    """Runs (or resumes) one judge run until every item is answered, a pause/stop request, or a
    failure that needs a person (then the run ends *failed* with the next step). A plan over
    runner.RequestRunner: the run's open verdicts, one judge prompt each."""

    job, step, events = "judge", "judge", ("judge_started", "judge_progress", "judge_ended")

    def __init__(self, pool: Pool, judge_run_id: int, on_event: Callable[[Event], None] | None = None,
                 control: RunControl | None = None, *, api_key: str | None = None, backend: Backend | None = None,
                 prices: PriceTable | None = None, overrides: dict | None = None, actor: str = "user",
                 env_key_any_url: bool = False):
        if pool.judge.run(judge_run_id) is None:
            raise ValueError(f"There is no judge run {judge_run_id} in {pool.path}.")
        self.pool, self.judge_run_id = pool, judge_run_id
        self.job_id = judge_run_id
        self.config = apply_judge_overrides(pool, judge_run_id, overrides or {}, actor=actor)
        # env_key_any_url: see backend.py (the app leaves it False; the CLI's user owns the key)
        self.backend = backend or Backend.for_run(self.config.to_dict(), api_key=api_key,
                                                  env_key_any_url=env_key_any_url)
        self.prices = prices or self.config.price_table()
        self.on_event = on_event or (lambda event: None)
        self.control = control or RunControl()
        RequestRunner(self, self.on_event, self.control)
        self.structured = False
        self._started_backend = False

    @property
    def pacer(self) -> AdaptiveLimit | None:
        lane = self.runner.lanes.get(0)
        return lane.pacer if lane else None

    # -- the stored job
    def set_status(self, status: str, **kwargs) -> None:
        self.pool.judge.set_status(self.judge_run_id, status, **kwargs)

    def stored_counts(self) -> dict:
        progress = self.pool.judge.progress(self.judge_run_id)
        usage = self.pool.judge.usage(self.judge_run_id)
        return {"done": progress["answered"], "total": progress["total"], "unparseable": progress["unparseable"],
                "cost_usd": usage["cost_usd"], "tokens": usage["tokens"]}

    def started_words(self) -> str:
        return f"judge run {self.judge_run_id} started"

    def resume_command(self) -> str:
        return resume_judge_command(self.judge_run_id)

    def next_step(self, kind: str) -> str:
        return _next_step(kind, self.judge_run_id)

    def status_unsaved_words(self, said: str, exc: Exception) -> str:
        return f"{said} The judge run's status could not be saved either ({exc}). {_next_step('storage', self.judge_run_id)}"

    def outcome(self, status: str, reason: str, error: str | None, next_step: str) -> JudgeOutcome:
        return JudgeOutcome(self.judge_run_id, status, reason, self.done, self.total, self.unparseable,
                            self.cost, error, next_step)

    def start(self) -> None:
        self._started_backend = self.backend._server is None
        self.backend.start()
        self.structured = self._decide_structured()
        self.sampling = Sampling.from_dict(self.config.sampling)

    def close(self) -> None:
        if self._started_backend:
            self.backend.stop()

    # -- structured output
    def _decide_structured(self) -> bool:
        """Whether this run's requests ask for JSON: decided at the first start and stored."""
        cfg, run = self.config, self.pool.judge.run(self.judge_run_id) or {}
        if cfg.mode != "chat":
            structured, note = False, "completion mode: the text layout (structured output is for chat)"
        elif cfg.structured == "on":
            structured, note = True, "on (set for the run)"
        elif cfg.structured == "off":
            structured, note = False, "off (set for the run)"
        elif run.get("structured") is not None:
            return bool(run["structured"])
        else:
            structured, note = probe_until_answered(self.backend, cfg, control=self.control,
                                                    say=lambda text: self.emit("step", text))
            note = f"auto: {'on' if structured else 'off'}, {note}"
        if run.get("structured") != structured or run.get("structured_note") != note:
            self.pool.judge.set_structured(self.judge_run_id, structured, note)
            self.emit("step", f"structured output: {note}")
        return structured

    # -- the requests
    def lanes(self) -> dict:
        return {0: lane_for(self.backend, self.config, self.prices)}

    def open_items(self) -> list[dict]:
        return self.pool.judge.open_items(self.judge_run_id)

    def request(self, row: dict) -> Request | None:
        if not (row.get("instruction") or "").strip():
            self._record_gone(row)
            return None
        prompt = prompts.build_judge_prompt(row["instruction"], row.get("input") or "", row.get("output") or "",
                                            structured=self.structured)
        return Request(lambda client: client.complete(prompt, self.sampling), prompt)

    def on_answer(self, row: dict, prompt: prompts.Prompt, completion: Completion) -> Answered | None:
        cfg = self.config
        if completion.oversize:
            verdict = parsing.JudgeVerdict(unparseable=f"the answer was larger than {cfg.max_answer_bytes:,} bytes")
        else:
            verdict = parsing.parse_answer(prompts.STAGE_JUDGE, completion.text, prompt,
                                           finish_reason=completion.finish_reason, version=cfg.parser_version)
        stored = self.pool.judge.record_answer(row["id"], {
            "prompt": prompt.full_text(), "prompt_version": prompt.version, "parser_version": cfg.parser_version,
            "structured": True if prompt.structured else None, "response": completion.text,
            "finish_reason": completion.finish_reason, **verdict.answers, "reason": verdict.reason or None,
            "unparseable": verdict.unparseable, "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens, "cost_usd": completion.cost_usd,
            "latency_s": completion.latency_s, "attempts": completion.attempts})
        return Answered(verdict.ok, verdict.unparseable or "") if stored else None

    def unreadable_words(self, done: int, why: str) -> str:
        return (f"None of the model's first {done} answers could be read as three yes/no/unsure answers "
                f"(the last: {why[:200]}).")

    def _record_gone(self, row: dict) -> None:
        if self.pool.judge.record_answer(row["id"], {"response": "", "unparseable": GONE,
                                                     "parser_version": self.config.parser_version}):
            self.runner.count(readable=False)

    def on_failure(self, row: dict, completion: Completion) -> None:
        self.pool.judge.record_failure(row["id"], error=completion.error or "", error_kind=completion.error_kind or "",
                                       attempts=completion.attempts, latency_s=completion.latency_s)


# -- summaries for the CLI and the page ----------------------------------------------------------
def answer_rates(pool: Pool, judge_run_id: int) -> dict[str, dict]:
    """Per question, over a run's readable verdicts: counts of yes / no / unsure, `n` (readable
    verdicts) and `yes_rate` (None with none); plus `unparseable` under the key "_unparseable"."""
    rows = pool.judge.verdicts(judge_run_id)
    readable = [r for r in rows if r["response"] is not None and r["unparseable"] is None]
    out: dict[str, dict] = {}
    for q in QUESTIONS:
        counts = {a: sum(r[q] == a for r in readable) for a in (YES, NO, UNSURE)}
        out[q] = {**counts, "n": len(readable), "yes_rate": counts[YES] / len(readable) if readable else None}
    out["_unparseable"] = {"n": sum(r["unparseable"] is not None for r in rows)}
    return out


def calibration_inputs(pool: Pool, judge_run_id: int) -> dict[str, tuple[list, list]] | None:
    """For a study's judge run: per question, (the judge's answer per study item, None when it has
    no readable verdict; the answers people gave that item, [] when nobody labeled it), over every
    item the run judged, in study order: what `calibration.calibrate` takes (it counts the
    unlabeled ones as left out). None when the run is not a study's or nobody labeled its items."""
    run = pool.judge.run(judge_run_id)
    if run is None or run["scope"] != SCOPE_STUDY or run["study_id"] is None:
        return None
    labels: dict[int, list[dict]] = {}
    for row in pool.quality.study_labels(run["study_id"]):
        labels.setdefault(row["item_id"], []).append(row)
    if not labels:
        return None
    verdicts = {v["study_item_id"]: v for v in pool.judge.verdicts(judge_run_id)
                if v["response"] is not None and v["unparseable"] is None}
    items = [v["study_item_id"] for v in pool.judge.verdicts(judge_run_id)]
    return {q: ([verdicts[i][q] if i in verdicts else None for i in items],
                [[r[q] for r in labels.get(i, ())] for i in items]) for q in QUESTIONS}


def calibrate_run(pool: Pool, judge_run_id: int) -> dict | None:
    """`calibration.calibrate` per question for a study's judge run (None: no labels to compare)."""
    inputs = calibration_inputs(pool, judge_run_id)
    if inputs is None:
        return None
    from . import calibration

    return {q: calibration.calibrate(judge, human, question=q) for q, (judge, human) in inputs.items()}


__all__ = ["JudgeConfig", "JudgeOutcome", "JudgeRunner", "RESUMABLE_JUDGE_SETTINGS", "SCOPES", "SCOPE_POOL",
           "SCOPE_STUDY", "active_judge", "answer_rates", "apply_judge_overrides", "calibrate_run",
           "calibration_inputs", "estimate_judge", "judge_view", "JudgeEstimate", "JudgeView",
           "resumable_judge_runs", "resume_judge_command", "start_judge"]


# -- pool-wide rates: many verdicts, few labels ----------------------------------------------------


@dataclass
class _StudyPairs:
    labels: list[dict]                  # Pool.study_labels rows
    rows: dict[int, list[dict]]         # study item id -> its labels
    verdicts: dict[int, dict]           # labeled study item id -> the run's verdict row on it
    order: list[int]                    # labeled study item ids, in id order
    others: list[dict]                  # the run's verdict rows on every item no study label is on
    strata: dict | None                 # candidate id -> study stratum (a stratified study), else None
    weights: dict | None                # study stratum -> its size when the study was drawn


class NoPoolRates(ValueError):
    """Why no pool-wide rate can be given, and what to do, in one sentence."""


def _readable(v: dict) -> bool:
    return v["response"] is not None and v["unparseable"] is None


def _study_pairs(pool: Pool, pool_judge_run_id: int, study_id: int) -> _StudyPairs:
    """A pool judge run's verdicts beside a study's labels (see `pool_rates`), after checking that
    the labeled items are a uniform random sample (within strata, for a stratified study) of the
    very items the run judged; NoPoolRates in one sentence otherwise."""
    run = pool.judge.run(pool_judge_run_id)
    if run is None:
        raise NoPoolRates(f"There is no judge run {pool_judge_run_id}.")
    if run["scope"] != SCOPE_POOL:
        raise NoPoolRates(f"Judge run {pool_judge_run_id} judged study {run['study_id']}, not the pool: pool-wide "
                          "rates need a judge run of the pool (selfinstruct judge --pool).")
    study = pool.quality.study(study_id)
    if study is None:
        raise NoPoolRates(f"There is no study {study_id}.")
    labels = pool.quality.study_labels(study_id)
    if not labels:
        raise NoPoolRates(f"Nobody has labeled study {study_id} yet: pool-wide rates need people's labels "
                          "(the Label page).")
    rows: dict[int, list[dict]] = {}
    for row in labels:
        rows.setdefault(row["item_id"], []).append(row)
    # An item deleted since the run planned it is no longer in the pool.
    planned = [v for v in pool.judge.verdicts(pool_judge_run_id) if v["unparseable"] != GONE]
    unanswered = sum(v["response"] is None for v in planned)
    if unanswered:
        raise NoPoolRates(
            f"No pool-wide rate yet: judge run {pool_judge_run_id} has answered {len(planned) - unanswered:,} of its "
            f"{len(planned):,} items, and the rate needs the judge's verdict on every one of them; resume it "
            f"({resume_judge_command(pool_judge_run_id)}).")
    by_task = {v["candidate_id"]: v for v in planned}
    cfg = study.get("config") or {}
    from_run = cfg.get("judge_run") == pool_judge_run_id
    draw = f"draw a study from judge run {pool_judge_run_id}'s items (the Label page) and label it"
    where = {item: (r[0]["candidate_id"], r[0]["instance_id"]) for item, r in rows.items()}
    outside = [item for item, (c, _) in where.items() if c not in by_task]
    if outside:
        raise NoPoolRates(
            f"No pool-wide rate: {len(outside)} of the {len(rows)} labeled items of study {study_id} are tasks judge "
            f"run {pool_judge_run_id} did not judge (it judged {len(planned):,}: a limited run, or the pool before "
            "later tasks were accepted), so its verdicts do not cover the population people sampled; judge every "
            "item of the pool (selfinstruct judge --pool) or " + draw + ".")
    other_instance = sum(by_task[c]["instance_id"] != i for c, i in where.values())
    if other_instance:
        raise NoPoolRates(
            f"No pool-wide rate: {other_instance} of the {len(rows)} labeled items of study {study_id} are another "
            f"instance of their task than the one judge run {pool_judge_run_id} judged (a pool run judges each "
            "task's first kept instance), so people and judge did not see the same items; " + draw + ".")
    filters = [f"{k} {', '.join(map(str, cfg[k]))}" for k in ("runs", "rounds") if cfg.get(k)]
    if filters:
        raise NoPoolRates(
            f"No pool-wide rate: study {study_id} was drawn from {' and '.join(filters)} only, not from every "
            f"item judge run {pool_judge_run_id} judged, so it is not a random sample of them; " + draw
            + " with no run or round filter.")
    if not from_run:
        eligible = cfg.get("eligible")
        if eligible is not None and int(eligible) != len(planned):
            raise NoPoolRates(
                f"No pool-wide rate: study {study_id} was drawn from {int(eligible):,} items but judge run "
                f"{pool_judge_run_id} judged {len(planned):,} (the pool changed in between), so the study is not a "
                "random sample of the judged items; " + draw + ".")
    strata = weights = None
    if cfg.get("stratify"):
        from .quality import study_strata

        stratum = study_strata(pool, study)
        strata = {c: stratum.get(c) for c in by_task}
        weights = {a["stratum"]: a["eligible"] for a in cfg.get("allocation") or []} or None
    labeled_tasks = {c for c, _ in where.values()}
    verdicts = {item: by_task[c] for item, (c, _) in where.items()}
    others = [v for v in planned if v["candidate_id"] not in labeled_tasks]
    return _StudyPairs(labels, rows, verdicts, sorted(rows), others, strata, weights)


def _answer(v: dict, q: str) -> str | None:
    """The run's answer to `q` (ALL_VALID: yes when all three are yes); None when unreadable."""
    if not _readable(v):
        return None
    if q == ALL_VALID:
        return YES if all(v[x] == YES for x in QUESTIONS) else NO
    return v[q]


def pool_rates(pool: Pool, pool_judge_run_id: int, study_id: int, *, method: str | None = None,
               confidence: float = 0.95) -> dict:
    """The pool's share of "yes" per question (and "all_valid": all three yes) from a pool-scope
    judge run (many verdicts) and a labeled quality study (few human labels), by
    `calibration.pool_rate` (by judge verdict, exact per cell, unless `method` names "ppi" or
    "ppi++"); each `PoolRate` carries the human-only Wilson interval, the paper's rate and the
    number of unreadable verdicts (a cell of their own) beside it.

    People's answer for an item is `model.majority` of its labels (split and unsure count as
    not-yes, the Label page's rule; "all_valid" is yes when the three majorities are yes). The
    population is the items the run judged; the rates are given only when the study's labeled
    items are a uniform random sample of them (`_study_pairs` checks: every item answered, the
    same tasks and instances, a study drawn from the same items without run or round filters;
    a stratified study's strata are weighed by their sizes when it was drawn). Otherwise raises
    NoPoolRates: one sentence saying why and what to do."""
    from . import calibration, quality

    pairs = _study_pairs(pool, pool_judge_run_id, study_id)
    order, labeled, rows = pairs.order, pairs.verdicts, pairs.rows
    people = {a["item_id"]: a for a in quality.item_answers(pairs.labels)}
    method = method or calibration.DEFAULT_METHOD
    strata: dict = {}
    if pairs.strata is not None:
        strata = {"unlabeled_strata": [pairs.strata[v["candidate_id"]] for v in pairs.others],
                  "labeled_strata": [pairs.strata[labeled[i]["candidate_id"]] for i in order],
                  "strata_weights": pairs.weights}
    out: dict = {}
    for q in (*QUESTIONS, ALL_VALID):
        human = ([[r[q] for r in rows[i]] for i in order] if q != ALL_VALID
                 else [[people[i][ALL_VALID]] for i in order])
        out[q] = calibration.pool_rate([_answer(v, q) for v in pairs.others], [_answer(labeled[i], q) for i in order],
                                       human, question=q, method=method, confidence=confidence,
                                       **(strata if method == calibration.STRATA else {}))
    return out


def pool_calibration(pool: Pool, pool_judge_run_id: int, study_id: int) -> dict:
    """`calibration.calibrate` per question for a pool judge run on a labeled study's items (the
    same verdicts `pool_rates` pairs with the labels); NoPoolRates as `pool_rates`."""
    from . import calibration

    pairs = _study_pairs(pool, pool_judge_run_id, study_id)
    unlabeled = sum(item not in pairs.rows for _, _, item in pool.judge.study_items(study_id))
    return {q: calibration.calibrate([_answer(pairs.verdicts[i], q) for i in pairs.order] + [None] * unlabeled,
                                     [[r[q] for r in pairs.rows[i]] for i in pairs.order] + [[]] * unlabeled,
                                     question=q)
            for q in QUESTIONS}


__all__ += ["NoPoolRates", "pool_calibration", "pool_rates"]
