"""The paper's evaluation of models (issue 17): two or more models answer the same instructions,
and people rate every answer blind on the paper's four levels (A valid and satisfying, B acceptable
with minor flaws, C responds but with significant errors, D irrelevant or invalid).

1. `create_evaluation(pool, models, instructions)`: the models (endpoint settings, `EvalModel`,
   never a key) and the instructions (`read_instruction_file`: the paper's user-oriented file,
   Self-Instruct seed JSONL, Alpaca JSON/JSONL; or `holdout_instructions`: a seeded sample of the
   pool's accepted tasks) are stored with one planned answer per (instruction, model), in one
   transaction.
2. `EvalRunner(pool, id).run()` collects the answers: the instruction (and its input) as the
   user's turn (`prompts.build_eval_answer_prompt`), sampling at temperature 0, each model through
   its own `llm.LLMClient`; every answer is stored as it arrives with tokens, cost and latency, so
   a killed process resumes from the rows and never sends an answered request again. Failures
   follow the judge's rules (retries that ran out are sent again; a streak fails the run).
3. Rating, blind: `blind_item(pool, id, rater, instruction_id)` gives a rater one instruction's
   answers in that rater's own random order (`blind_order`: seeded by evaluation, rater and
   instruction, so stable for one rater and different between raters), labelled by slot only;
   nothing in it names or numbers a model. `rate(...)` stores one rating per rater per answer.
4. `results(pool, id)`: per model the share of A / B / C / D and of "A or B" with Wilson intervals,
   over the answers people rated; an answer's people rating is the *median* of its ratings (the
   worse middle one for an even count: `people_rating`). Agreement across raters is
   calibration.py's: weighted kappa (linear) for two raters, Krippendorff's alpha (ordinal) for more.
5. The judge can pre-rate (`EvalRunner(..., task="prerate")` after `plan_prerating`): a model rates
   each answer A-D (`prompts.build_eval_rate_prompt`, structured output where supported), stored
   in `eval_prerates`, never with people's ratings; `results` shows its shares apart and its
   agreement with the people's rating (weighted kappa).

One job per pool: an evaluation's collection or pre-rating never runs beside a generation or judge
run of the same pool in this process (`active_evaluation`; jobs.JobManager refuses either way).
Keys follow `backend.Backend`'s rule.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import local, parsing, prompts
from .backend import LOCAL, OFFLINE, OPENAI_COMPATIBLE, Backend, defaults_for
from .calibration import RATINGS, Agreement, krippendorff_alpha, unit_ratings, weighted_kappa
from .llm import RATE_LIMIT_PATIENCE_S, Completion, PriceTable, Sampling
from .model import RESUMABLE_STATUSES
from .pipeline import NEXT_STEPS, probe_until_answered
from .control import Event, RunControl, active_of
from .settings import StoredSettings, check_endpoint_settings
from .quality import wilson_interval
from .runner import (MAX_FAILURES_PER_ITEM, RETRY_COOLDOWN_S, UNREADABLE_CHECK, Answered,  # noqa: F401 (their home)
                     Plan, Request, RequestRunner, lane_for)
from .store import Pool

COLLECT, PRERATE = "collect", "prerate"
TASKS = (COLLECT, PRERATE)
MIN_MODELS = 2
LEVELS = RATINGS                      # "A", "B", "C", "D", best first (calibration.RATINGS)
LEVEL_WORDS = prompts.EVAL_LEVELS     # what each level means, in the prompt's and the page's words
ACCEPTABLE = ("A", "B")               # the paper's "acceptable" answers


def answer_sampling() -> Sampling:
    """The answers' sampling: greedy (temperature 0), as for an evaluation."""
    return Sampling(temperature=0.0, top_p=1.0, max_tokens=1024, presence_penalty=0.0)


def judge_sampling() -> Sampling:
    return Sampling(temperature=0.0, top_p=1.0, max_tokens=128, presence_penalty=0.0)


# -- models -----------------------------------------------------------------------------------
@dataclass
class EvalModel(StoredSettings):
    """One model under evaluation: where its requests go (never the key: `key_env` names the
    variable) and the name results show (`label`, the model name when empty)."""
    backend: str = OFFLINE
    base_url: str = ""
    model: str = "offline-base"
    label: str = ""
    mode: str = "chat"
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 5
    max_answer_bytes: int = 1_000_000
    failure_streak: int = 3
    rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S   # nothing but 429s this long ends the collection
    key_env: str = "OPENAI_API_KEY"
    price_per_m: list[float] | None = None
    gguf: str = ""
    threads: int | None = None
    ctx_size: int | None = None

    @property
    def name(self) -> str:
        return self.label or self.model

    def price_table(self) -> PriceTable:
        return PriceTable.for_model(self.model, self.price_per_m)

    def validate(self) -> None:
        if not (self.model or "").strip():
            raise ValueError(f"{self.name or 'A model'}: Name the model to use.")
        try:
            check_endpoint_settings(self)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None


def model_from_spec(spec: str, **settings) -> EvalModel:
    """A model from the CLI's `--model` value: ``offline:NAME`` (the offline stand-in, whose
    answers get better or worse with NAME), ``local`` or ``local:FILE.gguf`` (llama.cpp on this
    machine), or ``URL:MODEL`` with an URL that has a path (``http://localhost:8000/v1:llama3:8b``;
    the model is everything after the first ':' that follows the URL's path)."""
    spec = (spec or "").strip()
    given = {k: v for k, v in settings.items() if v is not None}
    if spec.startswith("offline:") or spec == "offline":
        return EvalModel(backend=OFFLINE, model=spec.partition(":")[2] or "offline-base", **given)
    if spec == "local" or spec.startswith("local:"):
        gguf = spec.partition(":")[2]
        kind = defaults_for(LOCAL)
        return EvalModel(**{"backend": LOCAL, "gguf": gguf, "model": local.model_name(gguf or None), **kind,
                            **given})
    scheme, sep, rest = spec.partition("://")
    slash = rest.find("/")
    colon = rest.find(":", slash) if slash >= 0 else -1
    if not sep or scheme not in ("http", "https") or colon < 0 or not rest[colon + 1:].strip():
        raise ValueError(f"Cannot read the model {spec!r}: write offline:NAME, local[:FILE.gguf] or URL:MODEL "
                         "(for example https://api.openai.com/v1:gpt-4o-mini).")
    return EvalModel(backend=OPENAI_COMPATIBLE, base_url=f"{scheme}://{rest[:colon]}", model=rest[colon + 1:].strip(),
                     **given)


# -- instructions ---------------------------------------------------------------------------------
def read_instruction_file(path: str | Path, *, limit: int | None = None) -> list[dict]:
    """Instructions to evaluate from a file (see `read_instruction_text`). Raises ValueError in
    plain words."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"Cannot read {path}: {exc}") from None
    return read_instruction_text(text, path.name, limit=limit)


def read_instruction_text(text: str, name: str, *, limit: int | None = None) -> list[dict]:
    """Instructions from a file's text (`name` tells CSV by its suffix): JSON lines or a JSON
    list whose records have an `instruction` and either `input` (Alpaca) or `instances`
    (Self-Instruct seed tasks and the paper's user-oriented instructions: the first instance's
    input); or a CSV with `instruction` (and `input`) columns. Each comes back as `instruction`,
    `input`, `source` (the record's `id`, else the file name and record number)."""
    records: list = []
    if name.lower().endswith(".csv"):
        records = list(csv.DictReader(text.splitlines()))
    else:
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                records = json.loads(stripped)
            except ValueError as exc:
                raise ValueError(f"{name} is not valid JSON: {exc}") from None
        else:
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"{name}, line {n}: not a JSON object.") from None
    return instructions_from_records(records, origin=name, limit=limit)


def instructions_from_records(records: Sequence, *, origin: str = "upload", limit: int | None = None) -> list[dict]:
    out = []
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ValueError(f"{origin}, record {n}: not an object with an instruction.")
        instruction = str(record.get("instruction") or "").strip()
        if not instruction:
            raise ValueError(f"{origin}, record {n}: no instruction.")
        input_text = record.get("input")
        if input_text is None:
            instances = record.get("instances") or []
            input_text = instances[0].get("input", "") if instances and isinstance(instances[0], dict) else ""
        out.append({"instruction": instruction, "input": str(input_text or "").strip(),
                    "source": str(record.get("id") or f"{origin}:{n}")})
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{origin} holds no instruction.")
    return out


def holdout_instructions(pool: Pool, k: int, *, seed: int = 0) -> list[dict]:
    """A seeded random sample of `k` of the pool's accepted tasks (each with its first kept
    instance's input), to hold out from training and evaluate on."""
    if k < 1:
        raise ValueError("Hold out at least one task.")
    items = pool.judge.pool_items()
    if not items:
        raise ValueError("The pool has no accepted task with a kept instance to hold out.")
    chosen = sorted(random.Random(seed).sample(items, min(k, len(items))))
    texts = pool.judge.item_texts([(c, i) for c, i, _ in chosen])
    return [{"instruction": t["instruction"], "input": t["input"] or "", "source": f"pool:candidate {c}"}
            for (c, _, _), t in zip(chosen, texts)]


def create_evaluation(pool: Pool, models: Sequence[EvalModel], instructions: Sequence[dict], *,
                      name: str | None = None, actor: str = "user") -> int:
    """Store an evaluation and plan one answer per (instruction, model); its id."""
    if len(models) < MIN_MODELS:
        raise ValueError(f"Compare at least {MIN_MODELS} models.")
    for model in models:
        model.validate()
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError("Give each model a different name (--label), so the results can tell them apart.")
    if not instructions:
        raise ValueError("Give the evaluation at least one instruction.")
    config = {"models": [m.to_dict() for m in models], "sampling": answer_sampling().to_dict(),
              "prompt_version": prompts.EVAL_ANSWER_VERSION}
    return pool.evaluations.create(name=name, config=config, instructions=list(instructions), models=len(models),
                                  actor=actor)


def models_of(pool: Pool, evaluation_id: int) -> list[EvalModel]:
    evaluation = pool.evaluations.get(evaluation_id)
    if evaluation is None:
        raise ValueError(f"There is no evaluation {evaluation_id}.")
    return [EvalModel.from_dict(m) for m in evaluation["config"].get("models", [])]


def plan_prerating(pool: Pool, evaluation_id: int, judge_config, *, actor: str = "user") -> int:
    """Set the judge (a `judge.JudgeConfig`: endpoint, mode, structured...) that pre-rates this
    evaluation's answers and plan a pre-rating for each answered answer it has not rated yet; the
    number planned."""
    if pool.evaluations.get(evaluation_id) is None:
        raise ValueError(f"There is no evaluation {evaluation_id}.")
    judge_config.validate()
    if not pool.evaluations.progress(evaluation_id)["answered"]:
        raise ValueError("Collect the models' answers first: there is nothing to pre-rate yet.")
    config = {**judge_config.to_dict(), "prompt_versions": dict(prompts.EVAL_RATE_VERSIONS),
              "parser_version": parsing.EVAL_RATE_PARSER}
    return pool.evaluations.set_judge(evaluation_id, config, actor=actor)


ANSWER_TOKENS_GUESS = 250      # tokens of an answer, before any is stored


@dataclass(frozen=True)
class EvalEstimate:
    answers: int                 # still to collect
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    basis: str

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_collection(pool: Pool, evaluation_id: int) -> EvalEstimate:
    """Tokens and cost of the answers still to collect: the prompts' sizes (characters / 4, as the
    offline server counts) and, per answer, the mean of the answers already stored for that model
    (else a guess of ANSWER_TOKENS_GUESS), priced with each model's table."""
    models = models_of(pool, evaluation_id)
    stored = {u["model_index"]: u for u in pool.evaluations.usage_by_model(evaluation_id)}
    prompt_tokens = completion_tokens = 0
    cost = 0.0
    open_rows = pool.evaluations.open_answers(evaluation_id)
    guessed = False
    for index, model in enumerate(models):
        rows = [r for r in open_rows if r["model_index"] == index]
        p = sum(-(-len(prompts.build_eval_answer_prompt(r["instruction"], r["input"] or "",
                                                        completion=model.mode == "completion").full_text()) // 4)
                for r in rows)
        usage = stored.get(index)
        if usage and usage["answered"]:
            per_answer = usage["completion_tokens"] / usage["answered"]
        else:
            per_answer, guessed = ANSWER_TOKENS_GUESS, guessed or bool(rows)
        c = int(round(per_answer * len(rows)))
        prompt_tokens, completion_tokens = prompt_tokens + p, completion_tokens + c
        cost += model.price_table().cost(model.model, p, c)
    basis = "prompts counted; answers " + (f"guessed at {ANSWER_TOKENS_GUESS} tokens each where none is stored yet"
                                           if guessed else "from the answers already stored")
    return EvalEstimate(len(open_rows), prompt_tokens, completion_tokens, cost, basis)


def collect_command(evaluation_id: int) -> str:
    return f"selfinstruct evaluate collect {evaluation_id}"


def prerate_command(evaluation_id: int) -> str:
    return f"selfinstruct evaluate prerate {evaluation_id} --resume"


def _next_step(kind: str, evaluation_id: int, task: str) -> str:
    command = collect_command(evaluation_id) if task == COLLECT else prerate_command(evaluation_id)
    return f"{NEXT_STEPS.get(kind, 'Fix the cause, then resume.')} Resume with: {command}"


def active_evaluation(pool: Pool) -> int | None:
    """The evaluation collecting or pre-rating in this process for this pool file, if any (one job
    per pool: control.exclusive_job)."""
    return active_of(pool, "evaluate")


# -- the runner ------------------------------------------------------------------------------------
@dataclass
class EvalOutcome:
    evaluation_id: int
    task: str               # collect | prerate
    status: str             # finished | paused | stopped | failed
    stop_reason: str
    done: int
    total: int
    unparseable: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    next_step: str = ""


class EvalRunner(Plan):
    """Collects an evaluation's answers (task 'collect') or the judge's pre-ratings ('prerate')
    until every planned row is answered, a pause/stop request, or a failure that needs a person.
    `api_keys`: a typed key per model index (collect) or for the judge (key None). A plan over
    runner.RequestRunner: one lane per model (collect) or the judge's lane (prerate)."""

    job, events = "evaluate", ("eval_started", "eval_progress", "eval_ended")

    def __init__(self, pool: Pool, evaluation_id: int, on_event: Callable[[Event], None] | None = None,
                 control: RunControl | None = None, *, task: str = COLLECT, api_keys: dict | None = None,
                 env_key_any_url: bool = False, prices: PriceTable | None = None):
        evaluation = pool.evaluations.get(evaluation_id)
        if evaluation is None:
            raise ValueError(f"There is no evaluation {evaluation_id} in {pool.path}.")
        if task not in TASKS:
            raise ValueError(f"The task must be one of {', '.join(TASKS)}.")
        if task == PRERATE and not evaluation["judge_config"]:
            raise ValueError(f"Evaluation {evaluation_id} has no judge to pre-rate with; set one first.")
        self.pool, self.evaluation_id, self.task = pool, evaluation_id, task
        self.job_id, self.step = evaluation_id, task
        self.models = models_of(pool, evaluation_id)
        self.sampling = Sampling.from_dict(evaluation["config"].get("sampling") or answer_sampling().to_dict())
        self.judge = None
        if task == PRERATE:
            from .judge import JudgeConfig

            self.judge = JudgeConfig.from_dict(evaluation["judge_config"])
        self.api_keys = api_keys or {}
        self.env_key_any_url = env_key_any_url
        self.prices = prices
        self.on_event = on_event or (lambda event: None)
        self.control = control or RunControl()
        RequestRunner(self, self.on_event, self.control)
        self._offline = None
        self._backends: list[Backend] = []
        self._setups: dict = {}          # lane key -> (settings, started backend, prices)
        self._structured = False

    @property
    def judge_model(self) -> str:
        return self.judge.model if self.judge else ""

    # -- the stored job
    def set_status(self, status: str, **kwargs) -> None:
        self.pool.evaluations.set_status(self.evaluation_id, status, judge=self.task == PRERATE, **kwargs)

    def stored_counts(self) -> dict:
        if self.task == COLLECT:
            progress, unparseable = self.pool.evaluations.progress(self.evaluation_id), 0
        else:
            progress = self.pool.evaluations.prerate_progress(self.evaluation_id, self.judge_model)
            unparseable = progress["unparseable"]
        return {"done": progress["answered"], "total": progress["total"], "unparseable": unparseable,
                "cost_usd": progress["cost_usd"], "tokens": progress["tokens"]}

    def started_words(self) -> str:
        return f"evaluation {self.evaluation_id}: {self.task} started"

    def resume_command(self) -> str:
        return collect_command(self.evaluation_id) if self.task == COLLECT else prerate_command(self.evaluation_id)

    def next_step(self, kind: str) -> str:
        return _next_step(kind, self.evaluation_id, self.task)

    def status_unsaved_words(self, said: str, exc: Exception) -> str:
        return f"{said} The evaluation's status could not be saved either ({exc})."

    def outcome(self, status: str, reason: str, error: str | None, next_step: str) -> EvalOutcome:
        return EvalOutcome(self.evaluation_id, self.task, status, reason, self.done, self.total,
                           self.unparseable, self.cost, error, next_step)

    def start(self) -> None:
        if self.task == COLLECT:
            offline_names = [m.model for m in self.models if m.backend == OFFLINE]
            for index, model in enumerate(self.models):
                backend = self._backend(model, self.api_keys.get(index), self._backends, offline_names)
                self._setups[index] = (model, backend, self.prices or model.price_table())
        else:
            judge = self.judge
            backend = self._backend(judge, self.api_keys.get(None), self._backends, [judge.model])
            self._structured = self._decide_structured(backend)
            self._setups[0] = (judge, backend, self.prices or judge.price_table())

    def close(self) -> None:
        for backend in self._backends:
            backend.stop()
        self._backends.clear()
        if self._offline is not None:
            self._offline.stop()
            self._offline = None

    # -- backends
    def _backend(self, settings, key: str | None, backends: list[Backend], offline_names: Sequence[str]) -> Backend:
        """A started backend for one model (or the judge). Offline models share one offline
        server of this run that answers to each of their names."""
        if settings.backend == OFFLINE:
            if self._offline is None:
                from .offline import DEFAULT_MODEL, OfflineServer

                names = tuple(dict.fromkeys([*offline_names, DEFAULT_MODEL]))
                self._offline = OfflineServer(model_names=names).start()
            return Backend(kind=OFFLINE, base_url=self._offline.base_url)
        backend = Backend.for_run({**settings.to_dict()}, api_key=key, env_key_any_url=self.env_key_any_url)
        backends.append(backend)
        return backend.start()

    def _decide_structured(self, backend: Backend) -> bool:
        judge = self.judge
        evaluation = self.pool.evaluations.get(self.evaluation_id) or {}
        if judge.mode != "chat" or judge.structured == "off":
            structured = False
        elif judge.structured == "on":
            structured = True
        elif evaluation.get("judge_structured") is not None:
            return bool(evaluation["judge_structured"])
        else:
            structured, note = probe_until_answered(backend, judge, control=self.control,
                                                    say=lambda text: self.emit("step", text))
            self.emit("step", f"structured output: {'on' if structured else 'off'}, {note}")
        self.pool.evaluations.set_judge_structured(self.evaluation_id, structured)
        return structured

    # -- the requests
    def lanes(self) -> dict:
        return {key: lane_for(backend, settings, prices) for key, (settings, backend, prices) in self._setups.items()}

    def open_items(self) -> list[dict]:
        if self.task == COLLECT:
            return self.pool.evaluations.open_answers(self.evaluation_id)
        return self.pool.evaluations.open_prerates(self.evaluation_id, self.judge_model)

    def lane_of(self, row: dict) -> int:
        return row["model_index"] if self.task == COLLECT else 0

    def request(self, row: dict) -> Request:
        if self.task == COLLECT:
            prompt = prompts.build_eval_answer_prompt(row["instruction"], row["input"] or "",
                                                      completion=self.models[row["model_index"]].mode == "completion")
            sampling = self.sampling
        else:
            prompt = prompts.build_eval_rate_prompt(row["instruction"], row["input"] or "", row["answer"] or "",
                                                    structured=self._structured)
            sampling = judge_sampling()
        return Request(lambda client: client.complete(prompt, sampling), prompt)

    def on_answer(self, row: dict, prompt: prompts.Prompt, completion: Completion) -> Answered | None:
        if self.task == COLLECT:
            return self._record_answer(row, prompt, completion)
        return self._record_rating(row, prompt, completion)

    def on_failure(self, row: dict, completion: Completion) -> None:
        record = self.pool.evaluations.record_failure if self.task == COLLECT else self.pool.evaluations.record_prerate_failure
        record(row["id"], error=completion.error or "", error_kind=completion.error_kind or "",
               attempts=completion.attempts, latency_s=completion.latency_s)

    def unreadable_words(self, done: int, why: str) -> str:
        return f"None of the judge's first {done} ratings could be read as A, B, C or D (the last: {why[:200]})."

    def _record_answer(self, row: dict, prompt: prompts.Prompt, completion: Completion) -> Answered | None:
        text = completion.text
        if completion.oversize:
            text = text or ""
        stored = self.pool.evaluations.record_answer(row["id"], {
            "prompt": prompt.full_text(), "prompt_version": prompt.version, "response": text,
            "finish_reason": completion.finish_reason, "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens, "cost_usd": completion.cost_usd,
            "latency_s": completion.latency_s, "attempts": completion.attempts})
        return Answered() if stored else None

    def _record_rating(self, row: dict, prompt: prompts.Prompt, completion: Completion) -> Answered | None:
        if completion.oversize:
            rating = parsing.EvalRating(unparseable="the answer was larger than the size limit")
        else:
            rating = parsing.parse_eval_rate_answer(completion.text, prompt, finish_reason=completion.finish_reason)
        stored = self.pool.evaluations.record_prerate(row["id"], {
            "prompt": prompt.full_text(), "prompt_version": prompt.version, "parser_version": parsing.EVAL_RATE_PARSER,
            "structured": True if prompt.structured else None, "response": completion.text,
            "finish_reason": completion.finish_reason, "rating": rating.rating, "reason": rating.reason or None,
            "unparseable": rating.unparseable, "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens, "cost_usd": completion.cost_usd,
            "latency_s": completion.latency_s, "attempts": completion.attempts})
        return Answered(rating.ok, rating.unparseable or "") if stored else None


def resumable_evaluations(pool: Pool) -> list[dict]:
    """Evaluations whose collection ended before every answer came in."""
    return [e for e in pool.evaluations.all() if e["status"] in RESUMABLE_STATUSES and e["answered"] < e["answers"]]


# -- blind rating ----------------------------------------------------------------------------------
def blind_order(evaluation_id: int, rater: str, instruction_id: int, n: int) -> list[int]:
    """The order in which `rater` sees the `n` answers (model indexes) of one instruction: a
    permutation seeded by (evaluation, rater, instruction), so the same every time for one rater
    and, in general, different between raters."""
    material = f"blind|{evaluation_id}|{rater.strip().lower()}|{instruction_id}".encode()
    order = list(range(n))
    random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big")).shuffle(order)
    return order


@dataclass(frozen=True)
class BlindAnswer:
    slot: int                  # 1, 2, ...: "Answer 1", "Answer 2" (the rater's own order)
    answer_id: int
    text: str
    rating: str | None         # this rater's rating, if any


@dataclass(frozen=True)
class BlindItem:
    """One instruction as a rater sees it: nothing here names a model or its index."""
    instruction_id: int
    position: int              # 0-based place in the evaluation
    instruction: str
    input: str
    answers: tuple[BlindAnswer, ...]

    @property
    def rated(self) -> bool:
        return all(a.rating for a in self.answers)


def rating_queue(pool: Pool, evaluation_id: int, rater: str) -> dict:
    """A rater's work: `ready` (instruction ids whose answers are all in, in order), `todo` (those
    the rater has not rated whole), `rated` (count)."""
    answers = pool.evaluations.answers(evaluation_id)
    mine = {r["answer_id"] for r in pool.evaluations.ratings(evaluation_id, rater=rater)}
    by_instruction: dict[int, list[dict]] = {}
    for a in answers:
        by_instruction.setdefault(a["instruction_id"], []).append(a)
    ready = [i for i, rows in by_instruction.items() if all(r["response"] is not None for r in rows)]
    todo = [i for i in ready if not all(r["id"] in mine for r in by_instruction[i])]
    return {"ready": ready, "todo": todo, "rated": len(ready) - len(todo), "instructions": len(by_instruction)}


def blind_item(pool: Pool, evaluation_id: int, rater: str, instruction_id: int) -> BlindItem:
    instruction = next((i for i in pool.evaluations.instructions(evaluation_id) if i["id"] == instruction_id), None)
    if instruction is None:
        raise ValueError(f"Evaluation {evaluation_id} has no instruction {instruction_id}.")
    rows = {a["model_index"]: a for a in pool.evaluations.answers(evaluation_id) if a["instruction_id"] == instruction_id}
    mine = {r["answer_id"]: r["rating"] for r in pool.evaluations.ratings(evaluation_id, rater=rater)}
    order = blind_order(evaluation_id, rater, instruction_id, len(rows))
    answers = tuple(BlindAnswer(slot, rows[m]["id"], rows[m]["response"] or "", mine.get(rows[m]["id"]))
                    for slot, m in enumerate(order, 1))
    return BlindItem(instruction_id, instruction["position"], instruction["instruction"], instruction["input"] or "",
                     answers)


def rate(pool: Pool, evaluation_id: int, answer_id: int, rater: str, rating: str, note: str | None = None) -> None:
    """Store `rater`'s rating of one answer (a person's; the judge's are `eval_prerates`)."""
    if rating not in LEVELS:
        raise ValueError(f"A rating is one of {', '.join(LEVELS)}.")
    rater = (rater or "").strip()
    if not rater:
        raise ValueError("Say who is rating.")
    answer = next((a for a in pool.evaluations.answers(evaluation_id) if a["id"] == answer_id), None)
    if answer is None or answer["response"] is None:
        raise ValueError("That answer is not in this evaluation or has not come in yet.")
    pool.evaluations.save_rating(answer_id, rater, rating, note)


# -- results ----------------------------------------------------------------------------------------
def people_rating(ratings: Sequence[str]) -> str | None:
    """An answer's rating by its people: the median level; for an even count, the worse of the
    two middle ones (None without ratings)."""
    ordered = sorted(ratings, key=LEVELS.index)
    return ordered[len(ordered) // 2] if ordered else None


@dataclass(frozen=True)
class Share:
    count: int
    n: int
    share: float | None
    low: float | None
    high: float | None


def _share(count: int, n: int) -> Share:
    interval = wilson_interval(count, n)
    return Share(count, n, count / n if n else None, *(interval or (None, None)))


@dataclass(frozen=True)
class ModelResult:
    index: int
    name: str
    rated: int                       # answers with a rating
    levels: dict[str, Share]         # "A".."D"
    acceptable: Share                # A or B
    cumulative: dict[str, Share]     # "A", "A-B", "A-C": at least that good


@dataclass(frozen=True)
class EvalResults:
    evaluation_id: int
    models: list[ModelResult]                 # people's ratings (their median per answer)
    raters: list[str]
    agreement: Agreement | None               # between people (None with fewer than two raters)
    judge_model: str | None
    judge_models: list[ModelResult]           # the judge's pre-ratings, per model (never counted above)
    judge_agreement: Agreement | None         # the judge against the people's rating
    judge_exact: Share | None                 # share of answers where the judge gives the people's level


def _model_results(models: Sequence[EvalModel], per_answer: dict[int, str], model_of: dict[int, int]) -> list:
    out = []
    for index, model in enumerate(models):
        levels = [r for a, r in per_answer.items() if model_of.get(a) == index]
        n = len(levels)
        counts = {level: levels.count(level) for level in LEVELS}
        cumulative = {"A": _share(counts["A"], n), "A-B": _share(counts["A"] + counts["B"], n),
                      "A-C": _share(n - counts["D"], n)}
        out.append(ModelResult(index, model.name, n, {level: _share(c, n) for level, c in counts.items()},
                               _share(counts["A"] + counts["B"], n), cumulative))
    return out


def agreement_of(ratings: dict[str, dict[int, str]]) -> Agreement | None:
    """People's agreement on A-D: weighted kappa (linear) for two raters over the answers both
    rated, Krippendorff's alpha (ordinal) for more (calibration.py's)."""
    raters = [r for r, rows in ratings.items() if rows]
    if len(raters) < 2:
        return None
    if len(raters) == 2:
        a, b = (ratings[r] for r in raters)
        return weighted_kappa([(a[k], b[k]) for k in a if k in b])
    return krippendorff_alpha(unit_ratings({r: ratings[r] for r in raters}))


def results(pool: Pool, evaluation_id: int) -> EvalResults:
    models = models_of(pool, evaluation_id)
    evaluation = pool.evaluations.get(evaluation_id)
    model_of = {a["id"]: a["model_index"] for a in pool.evaluations.answers(evaluation_id)}
    by_rater: dict[str, dict[int, str]] = {}
    by_answer: dict[int, list[str]] = {}
    for row in pool.evaluations.ratings(evaluation_id):
        by_rater.setdefault(row["rater"], {})[row["answer_id"]] = row["rating"]
        by_answer.setdefault(row["answer_id"], []).append(row["rating"])
    people = {a: people_rating(r) for a, r in by_answer.items()}
    judge_model = (evaluation.get("judge_config") or {}).get("model") if evaluation else None
    judge = {}
    if judge_model:
        judge = {p["answer_id"]: p["rating"] for p in pool.evaluations.prerates(evaluation_id, judge_model)
                 if p["rating"] in LEVELS}
    pairs = [(judge[a], people[a]) for a in judge if a in people]
    return EvalResults(
        evaluation_id, _model_results(models, people, model_of), sorted(by_rater), agreement_of(by_rater),
        judge_model, _model_results(models, judge, model_of) if judge else [],
        weighted_kappa(pairs) if pairs else None,
        _share(sum(j == p for j, p in pairs), len(pairs)) if pairs else None)


def results_table(res: EvalResults, *, judge: bool = False) -> list[dict]:
    """One row per (model, level) for the stacked-bar chart and the tables: model, level, count,
    n, share, and the Wilson interval of "at least this good" (A; A or B; A to C)."""
    rows = []
    for m in (res.judge_models if judge else res.models):
        for level, cum in zip(LEVELS, ("A", "A-B", "A-C", None)):
            share = m.levels[level]
            bound = m.cumulative.get(cum) if cum else None
            rows.append({"model": m.name, "level": level, "count": share.count, "n": share.n,
                         "share": share.share or 0.0,
                         "cum_share": bound.share if bound else None,
                         "cum_low": bound.low if bound else None, "cum_high": bound.high if bound else None})
    return rows


@dataclass
class EvalView:
    """What a page shows about one evaluation (owners), in one call."""
    evaluation: dict
    models: list[EvalModel]
    progress: dict
    usage: list[dict]
    prerate_progress: dict | None
    results: EvalResults


def evaluation_view(pool: Pool, evaluation_id: int) -> EvalView:
    evaluation = pool.evaluations.get(evaluation_id)
    if evaluation is None:
        raise ValueError(f"There is no evaluation {evaluation_id}.")
    judge_model = (evaluation.get("judge_config") or {}).get("model")
    return EvalView(evaluation, models_of(pool, evaluation_id), pool.evaluations.progress(evaluation_id),
                    pool.evaluations.usage_by_model(evaluation_id),
                    pool.evaluations.prerate_progress(evaluation_id, judge_model) if judge_model else None,
                    results(pool, evaluation_id))


__all__ = ["ACCEPTABLE", "COLLECT", "LEVELS", "LEVEL_WORDS", "PRERATE", "BlindAnswer", "BlindItem", "EvalModel",
           "EvalOutcome", "EvalResults", "EvalRunner", "EvalView", "ModelResult", "Share", "active_evaluation",
           "agreement_of", "blind_item", "estimate_collection", "EvalEstimate", "blind_order", "collect_command", "create_evaluation", "evaluation_view",
           "holdout_instructions", "instructions_from_records", "read_instruction_text", "model_from_spec", "models_of", "people_rating",
           "plan_prerating", "prerate_command", "rate", "rating_queue", "read_instruction_file", "results",
           "results_table", "resumable_evaluations"]
