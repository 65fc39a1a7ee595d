"""What an export holds and how each format shapes a row: the formats
(`FORMATS`, `FORMAT_INFO`), the row filters (`ExportFilters`), the prompt
templates of the prompt-completion format, the options, and `Recorder`, which
turns exported rows into one format's records."""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Sequence

from ..model import EXPORT_FORMATS, NUL_REPLACEMENT, QUESTIONS, without_nul
from ..store.explore import EXPORT_COLUMNS

__all__ = [
    "FORMATS", "FORMAT_INFO", "FORMAT_ALIASES", "format_name", "FormatInfo", "ExportFilters", "ExportOptions", "PromptTemplate",
    "PROMPT_TEMPLATES", "render_prompt", "parse_run_ids", "EXPORT_COLUMNS", "Recorder", "dumps", "rows_of",
    "clean_row", "csv_values", "csv_cell", "csv_text", "CSV_FORMULA_STARTS", "CSV_NUL_REPLACEMENT",
    "CSV_SAFETY_NOTE",
]

FORMATS: tuple[str, ...] = EXPORT_FORMATS


# Other spellings people type for a format (the paper's name is "Self-Instruct").
FORMAT_ALIASES = {"self-instruct": "selfinstruct", "messages": "chat", "promptcompletion": "prompt-completion"}


def format_name(text: str, allowed: Sequence[str] = FORMATS) -> str:
    """The format a typed name means, among `allowed` (the export's FORMATS, or the seed
    import's): the name itself, an alias ("self-instruct"), or a file type that only one of them
    has ("parquet", "json"). ValueError in words otherwise, listing the formats a file type such
    as "jsonl" could mean."""
    key = (text or "").strip().lower().replace("_", "-").replace(" ", "-")
    key = FORMAT_ALIASES.get(key, FORMAT_ALIASES.get(key.replace("-", ""), key))
    if key in allowed:
        return key
    same_type = [f for f in allowed if FORMAT_INFO[f].extension == "." + key.lstrip(".")]
    if len(same_type) == 1:
        return same_type[0]
    if same_type:
        raise ValueError(f"{text} is the file type of {len(same_type)} formats: "
                         + "; ".join(f"{f} ({FORMAT_INFO[f].label})" for f in same_type) + ". Name one of them.")
    raise ValueError(f"Unknown format {text!r}; use one of {', '.join(allowed)}.")


@dataclass(frozen=True)
class FormatInfo:
    label: str
    extension: str
    mime: str
    per_task: bool      # one record per task (else one per instance)
    description: str


FORMAT_INFO: dict[str, FormatInfo] = {
    "selfinstruct": FormatInfo(
        "Self-Instruct JSONL", ".jsonl", "application/jsonl", True,
        "One task per line: id, name, instruction, its instances (input, output) and "
        "is_classification, as in the Self-Instruct seed file. Re-imports as seed tasks."),
    "alpaca": FormatInfo(
        "Alpaca JSON", ".json", "application/json", False,
        "A JSON list with one {instruction, input, output} object per instance, as in "
        "Stanford Alpaca's data file. Re-imports as seed tasks."),
    "chat": FormatInfo(
        "Chat messages JSONL", ".jsonl", "application/jsonl", False,
        "One conversation per line, {\"messages\": [...]}: an optional system message, the user "
        "turn (the instruction, then a blank line and the input when there is one) and the "
        "assistant turn (the output). The shape chat fine-tuning APIs and trainers read."),
    "prompt-completion": FormatInfo(
        "Prompt/completion JSONL", ".jsonl", "application/jsonl", False,
        "One {prompt, completion, template} object per line. Each instance is rendered through "
        "one of several prompt templates picked at random (with a fixed seed), so a model tuned "
        "on it does not depend on one prompt layout; `template` names the one used."),
    "parquet": FormatInfo(
        "Parquet", ".parquet", "application/vnd.apache.parquet", False,
        "One row per instance with source, task_id, run_id, round, instruction, "
        "is_classification, instance_id, position, input and output."),
    "csv": FormatInfo(
        "CSV", ".csv", "text/csv", False,
        "One row per instance with the same columns as the Parquet file (UTF-8, header row). "
        "Safe to open in a spreadsheet: a cell that could run as a formula gets a leading ', "
        "and NUL characters become U+FFFD."),
}

# ---------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class ExportFilters:
    """Which rows an export holds. Seeds are included or not as a whole; the
    run, round, review and label filters concern generated tasks only; the
    classification and length filters concern both.

    `runs`: run ids (empty: every run). `min_round`/`max_round`: round numbers
    within a run, inclusive. `classification`: True/False for only/no
    classification tasks, None for both. `exclude_rescued`: drop tasks a person
    rescued from the rejects. `human_approved_only`: keep only generated tasks a
    person vouched for (rescued, or approved/edited in the pool explorer).
    `exclude_invalid`: drop tasks any annotator judged not a valid task, and
    instances any annotator judged to have a bad input or output. Word bounds
    are inclusive (words as str.split() counts them). `include_empty_tasks`:
    also write tasks left with no instance (Self-Instruct JSONL only; the other
    formats are one row per instance).

    `judge_run_id` / `judge_exclude`: the model judge's filter. With questions in
    `judge_exclude` (model.QUESTIONS), an item whose latest verdict in that judge run
    answers "no" to one of them is left out: "valid_task" drops the task, "input_ok" and
    "output_ok" the instance the judge saw. A judge run alone filters nothing; the
    dataset card then reports that judge's figures."""
    include_seeds: bool = True
    include_generated: bool = True
    runs: tuple[int, ...] = ()
    min_round: int | None = None
    max_round: int | None = None
    classification: bool | None = None
    exclude_rescued: bool = False
    human_approved_only: bool = False
    exclude_invalid: bool = False
    min_instruction_words: int | None = None
    max_instruction_words: int | None = None
    min_output_words: int | None = None
    max_output_words: int | None = None
    include_empty_tasks: bool = False
    judge_run_id: int | None = None
    judge_exclude: tuple[str, ...] = ()
    # At most this many tasks per topic of topic set `topic_set_id` (topics.py), kept by the duplicate
    # groups' keep rule (model.keep_rank): a balanced dataset. The other filters apply after the cap.
    max_per_topic: int | None = None
    topic_set_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(int(r) for r in (self.runs or ())))
        exclude = self.judge_exclude
        if isinstance(exclude, str):
            exclude = exclude.split(",")
        exclude = tuple(dict.fromkeys(q.strip() for q in exclude or () if q and q.strip()))
        unknown = [q for q in exclude if q not in QUESTIONS]
        if unknown:
            raise ValueError(f"The judge's answers that drop items are some of {', '.join(QUESTIONS)}, "
                             f"not {', '.join(unknown)}.")
        if exclude and self.judge_run_id is None:
            raise ValueError("Choose the judge run whose verdicts drop items.")
        if self.max_per_topic is not None and (int(self.max_per_topic) < 1 or self.topic_set_id is None):
            raise ValueError("A cap per topic needs a number of at least 1 and the topics it counts by.")
        object.__setattr__(self, "judge_exclude", tuple(q for q in QUESTIONS if q in exclude))
        if self.judge_run_id is not None:
            object.__setattr__(self, "judge_run_id", int(self.judge_run_id))
        for low, high in (("min_round", "max_round"), ("min_instruction_words", "max_instruction_words"),
                          ("min_output_words", "max_output_words")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi}).")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["runs"] = list(self.runs)
        data["judge_exclude"] = list(self.judge_exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ExportFilters":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def for_format(self, fmt: str) -> "ExportFilters":
        """The filters as `fmt` applies them (empty tasks only exist per task)."""
        if self.include_empty_tasks and not FORMAT_INFO[fmt].per_task:
            return dataclasses.replace(self, include_empty_tasks=False)
        return self

    def describe(self) -> list[str]:
        """The filters in plain sentences (for the card and the CLI)."""
        out = []
        if self.include_seeds and self.include_generated:
            out.append("Seed tasks and generated tasks.")
        elif self.include_seeds:
            out.append("Seed tasks only.")
        elif self.include_generated:
            out.append("Generated tasks only (no seed tasks).")
        else:
            out.append("Neither seed nor generated tasks (an empty export).")
        if self.include_generated:
            if self.runs:
                out.append(f"Generated tasks from run(s) {', '.join(map(str, self.runs))} only.")
            if self.min_round is not None or self.max_round is not None:
                out.append(f"Generated tasks from rounds {_range_text(self.min_round, self.max_round)}.")
            if self.exclude_rescued:
                out.append("Tasks rescued from the rejects by a person are left out.")
            if self.human_approved_only:
                out.append("Only generated tasks a person approved (rescued, approved or edited).")
            if self.exclude_invalid:
                out.append("Tasks an annotator labeled not valid, and instances with an input or "
                           "output an annotator labeled wrong, are left out.")
            if self.judge_run_id is not None and self.judge_exclude:
                parts = {"valid_task": "tasks it called not a valid task",
                         "input_ok": "instances whose input it called not appropriate",
                         "output_ok": "instances whose output it called not acceptable"}
                out.append(f"The model judge's verdicts (judge run {self.judge_run_id}, its latest readable "
                           f"verdict per item) leave out " + "; ".join(parts[q] for q in self.judge_exclude) + ".")
        if self.classification is True:
            out.append("Classification tasks only.")
        elif self.classification is False:
            out.append("Classification tasks are left out.")
        if self.min_instruction_words is not None or self.max_instruction_words is not None:
            out.append("Instructions of "
                       f"{_range_text(self.min_instruction_words, self.max_instruction_words)} words.")
        if self.min_output_words is not None or self.max_output_words is not None:
            out.append(f"Outputs of {_range_text(self.min_output_words, self.max_output_words)} words.")
        if self.max_per_topic is not None:
            out.append(f"At most {self.max_per_topic:,} task(s) per topic (topic set {self.topic_set_id}), kept in "
                       "the order of the duplicate groups' rule: seed tasks, then tasks a person approved, then "
                       "tasks the judge called valid, then the earliest; the other filters apply after the cap.")
        out.append("Every instance is one the instance filters kept." + (
            " Tasks with no instance left are written with an empty instance list."
            if self.include_empty_tasks else " Tasks with no instance left are skipped."))
        return out


def _range_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"{low} or more"
    return f"up to {high}"


# ---------------------------------------------------------------------------- prompt templates
@dataclass(frozen=True)
class PromptTemplate:
    """A prompt layout. `with_input`/`without_input` use {instruction} and {input};
    the completion is `completion_prefix` + output."""
    id: str
    with_input: str
    without_input: str
    completion_prefix: str = ""


PROMPT_TEMPLATES: tuple[PromptTemplate, ...] = (
    PromptTemplate("labeled-lines",
                   "Instruction: {instruction}\nInput: {input}\nResponse:",
                   "Instruction: {instruction}\nResponse:", " "),
    PromptTemplate("markdown-sections",
                   "## Task\n{instruction}\n\n## Given\n{input}\n\n## Answer\n",
                   "## Task\n{instruction}\n\n## Answer\n"),
    PromptTemplate("plain",
                   "{instruction}\n\n{input}\n\n",
                   "{instruction}\n\n"),
    PromptTemplate("question-answer",
                   "Q: {instruction}\n{input}\nA:",
                   "Q: {instruction}\nA:", " "),
    PromptTemplate("request",
                   "Please complete the request below.\n\nRequest: {instruction}\nDetails: {input}\n\n"
                   "Completed:",
                   "Please complete the request below.\n\nRequest: {instruction}\n\nCompleted:", " "),
    PromptTemplate("bracketed",
                   "[TASK]\n{instruction}\n[CONTEXT]\n{input}\n[RESULT]\n",
                   "[TASK]\n{instruction}\n[RESULT]\n"),
)


def render_prompt(template: PromptTemplate, instruction: str, input: str) -> str:
    pattern = template.with_input if (input or "").strip() else template.without_input
    # str.replace, not str.format: braces in the text must stay braces.
    return pattern.replace("{instruction}", instruction).replace("{input}", input or "")


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ExportOptions:
    system_prompt: str | None = None        # chat: an optional system message on every row
    template_seed: int = 0                  # prompt-completion: seed of the template choice
    templates: tuple[PromptTemplate, ...] = PROMPT_TEMPLATES
    batch_size: int = 2_048                 # rows per batch read from DuckDB (one DuckDB vector)

    def describe(self, fmt: str) -> list[str]:
        if fmt == "chat":
            return [f"System prompt: {self.system_prompt!r}." if self.system_prompt
                    else "No system message."]
        if fmt == "prompt-completion":
            return [f"{len(self.templates)} prompt templates "
                    f"({', '.join(t.id for t in self.templates)}), one chosen per row at random "
                    f"with seed {self.template_seed}."]
        return []


# ---------------------------------------------------------------------------- records
def _user_turn(instruction: str, inp: str) -> str:
    return f"{instruction}\n\n{inp}" if (inp or "").strip() else instruction


class Recorder:
    """Turns exported rows into one format's records, in order (stateful for the
    random template choice and for grouping a task's instances)."""

    def __init__(self, fmt: str, options: ExportOptions):
        if fmt not in FORMATS:
            raise ValueError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
        self.fmt, self.options = fmt, options
        self.rng = random.Random(options.template_seed)
        self.task_key: tuple | None = None
        self.task: dict | None = None

    def record(self, row: dict) -> dict | None:
        fmt = self.fmt
        row = _nul_free(row)
        if fmt == "alpaca":
            return {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}
        if fmt == "chat":
            messages = []
            if self.options.system_prompt:
                messages.append({"role": "system", "content": self.options.system_prompt})
            messages.append({"role": "user", "content": _user_turn(row["instruction"], row["input"])})
            messages.append({"role": "assistant", "content": row["output"]})
            return {"messages": messages}
        if fmt == "prompt-completion":
            template = self.options.templates[self.rng.randrange(len(self.options.templates))]
            return {"prompt": render_prompt(template, row["instruction"], row["input"]),
                    "completion": template.completion_prefix + row["output"], "template": template.id}
        raise ValueError(fmt)

    # Self-Instruct JSONL groups a task's consecutive rows into one record.
    def add_to_task(self, row: dict) -> dict | None:
        """Feed a row; returns the previous task's record when this row starts a new task."""
        key = (row["source"], row["task_id"])
        row = _nul_free(row)
        done = None
        if key != self.task_key:
            done = self.finish_task()
            self.task_key = key
            # A seed keeps the id and name of the file it came from, so export -> import ->
            # export gives the same records; the pool's own number names the others.
            prefix = "seed_task" if row["source"] == "seed" else "generated_task"
            self.task = {"id": row.get("task_ref") or f"{prefix}_{row['task_id']}", "name": row.get("task_name"),
                         "instruction": row["instruction"], "instances": [],
                         "is_classification": bool(row["is_classification"])}
        if row["instance_id"] is not None:
            self.task["instances"].append({"input": row["input"], "output": row["output"]})
        return done

    def finish_task(self) -> dict | None:
        done, self.task, self.task_key = self.task, None, None
        return done


def _nul_free(row: dict) -> dict:
    """The row's texts with NUL as U+FFFD (model.without_nul): answers stored before the parsers
    cleaned them (parser v2) may hold one, and a seed file may not."""
    if not any(isinstance(v, str) and "\x00" in v for v in row.values()):
        return row
    return {k: without_nul(v) if isinstance(v, str) else v for k, v in row.items()}


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def rows_of(batch) -> list[dict]:
    return batch.to_pylist()


def clean_row(row: dict) -> dict:
    """A DataFrame row as plain Python values (NaN/NA to None, numpy to int/bool)."""
    import pandas as pd

    out = {}
    for key, value in row.items():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out[key] = None
        elif key in ("task_id", "run_id", "round", "instance_id", "position"):
            out[key] = int(value)
        elif key == "is_classification":
            out[key] = bool(value)
        else:
            out[key] = value
    return out


# CSV is opened in spreadsheets, which run a cell starting with one of these as a formula
# (OWASP, "CSV Injection"): such a cell gets a leading single quote. A leading "-" too, even
# in "- item" or "-5": the prefix costs one character, a missed formula costs more.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# NUL stops many CSV readers and spreadsheets mid-file; it is written as U+FFFD instead (the one
# rule for NUL, model.without_nul, which every export applies).
CSV_NUL_REPLACEMENT = NUL_REPLACEMENT
CSV_SAFETY_NOTE = (
    "Every cell is in double quotes, and every cell that starts with =, +, -, @, a tab or a "
    "carriage return gets a leading single quote (') so that no spreadsheet runs it as a formula "
    "(OWASP's advice against CSV injection); a cell that starts with ' gets one too, so removing "
    "one leading ' from every cell that starts with one gives the text back exactly. NUL "
    "characters (U+0000) are written as U+FFFD (\ufffd), as spreadsheets and many CSV readers "
    "stop at them, as in every other format of the export.")


def csv_cell(value: str) -> str:
    """A text value as the CSV export writes it: NUL as U+FFFD, then a leading ' when
    it starts with one of `CSV_FORMULA_STARTS` or with ' (`csv_text` undoes the quote)."""
    value = without_nul(value)
    if value[:1] in CSV_FORMULA_STARTS or value[:1] == "'":
        return "'" + value
    return value


def csv_text(cell: str) -> str:
    """The text of a cell of our CSV export (its guarding quote removed; NULs stay U+FFFD)."""
    return cell[1:] if cell[:1] == "'" else cell


def csv_values(row: dict, *, safe: bool = True) -> list:
    """A row's cells for the CSV file; with `safe` (the CSV export) text passes
    through `csv_cell`."""
    values = []
    for key in EXPORT_COLUMNS:
        value = row[key]
        if key == "is_classification":
            value = "true" if value else "false"
        elif value is None:
            value = ""
        elif safe and isinstance(value, str):
            value = csv_cell(value)
        values.append(value)
    return values


def parse_run_ids(values: Sequence[str] | None) -> tuple[int, ...]:
    """'1,2' '3' -> (1, 2, 3): run ids given on a command line."""
    out: list[int] = []
    for value in values or ():
        for part in str(value).split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise ValueError(f"Run ids are whole numbers, not {part.strip()!r}.") from None
    return tuple(out)
