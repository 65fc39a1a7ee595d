"""The curated pool in the formats trainers use, with a dataset card.

Formats (`FORMATS`):

==================  ==========================================================
``selfinstruct``    Self-Instruct JSONL: one task per line, ``{"id", "name",
                    "instruction", "instances": [{"input", "output"}],
                    "is_classification"}`` (re-imports as seeds).
``alpaca``          Alpaca JSON: a list of ``{"instruction", "input", "output"}``,
                    one per instance (re-imports as seeds).
``chat``            JSONL of ``{"messages": [{"role", "content"}, ...]}``: an
                    optional system message, the user turn (instruction, then a
                    blank line and the input when there is one) and the
                    assistant turn (the output).
``prompt-completion``  JSONL of ``{"prompt", "completion", "template"}``: each
                    instance rendered through one of `PROMPT_TEMPLATES`, chosen at
                    random per row with a fixed seed (the paper's trick for
                    robustness to prompt formats).
``parquet``, ``csv``  one row per instance with `EXPORT_COLUMNS`.
==================  ==========================================================

Which rows: `ExportFilters`, turned into SQL by the pool (`Pool.export_counts`,
`Pool.export_preview`, `Pool.export_reader` share one query builder), so the
counts a page shows are the rows a file gets.

Writing streams: rows come from DuckDB in Arrow batches and each batch is
written before the next is read, so an export never holds the whole dataset in
Python memory (Parquet via `pyarrow.parquet.ParquetWriter`, batch by batch).

`export_dataset` writes the data file and, beside it, a dataset card
(README.md with counts, the runs' generation settings, the filters, the quality
study's results and SVG charts); with an ``.zip`` path everything goes into one
zip archive instead.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator, Sequence
from xml.sax.saxutils import escape as _xml_escape

from . import __version__
from .explore import HEURISTIC_NOTE, rouge_histogram, rouge_vs_seeds, verb_noun_counts
from .store import Pool
from .store.explore import EXPORT_COLUMNS

__all__ = [
    "FORMATS", "FORMAT_INFO", "ExportFilters", "ExportOptions", "ExportResult", "PromptTemplate",
    "PROMPT_TEMPLATES", "render_prompt", "write_export", "preview_records", "build_card",
    "DatasetCard", "export_dataset", "export_archive_bytes", "download_name", "iter_records", "parse_run_ids",
    "EXPORT_COLUMNS", "CARD_MARKER",
]

FORMATS: tuple[str, ...] = ("selfinstruct", "alpaca", "chat", "prompt-completion", "parquet", "csv")


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
        "Re-imports as seed tasks."),
}

CARD_MARKER = "<!-- selfinstruct dataset card -->"
PAPER_LENGTHS = {"instruction": 15.9, "input": 12.7, "output": 18.9}
PAPER_QUALITY = {"valid_task": 0.92, "input_ok": 0.79, "output_ok": 0.58, "all": 0.54}


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
    formats are one row per instance)."""
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(int(r) for r in (self.runs or ())))
        for low, high in (("min_round", "max_round"), ("min_instruction_words", "max_instruction_words"),
                          ("min_output_words", "max_output_words")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi}).")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["runs"] = list(self.runs)
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
        if self.classification is True:
            out.append("Classification tasks only.")
        elif self.classification is False:
            out.append("Classification tasks are left out.")
        if self.min_instruction_words is not None or self.max_instruction_words is not None:
            out.append("Instructions of "
                       f"{_range_text(self.min_instruction_words, self.max_instruction_words)} words.")
        if self.min_output_words is not None or self.max_output_words is not None:
            out.append(f"Outputs of {_range_text(self.min_output_words, self.max_output_words)} words.")
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


# ---------------------------------------------------------------------------- options and results
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


@dataclass
class ExportResult:
    format: str
    path: Path | None
    records: int                 # lines / list items / rows written
    tasks: int
    instances: int
    skipped_tasks: int           # tasks with no instance left, not written
    bytes: int = 0
    seconds: float = 0.0
    card_path: Path | None = None
    chart_paths: list[Path] = field(default_factory=list)
    files: list[str] = field(default_factory=list)   # inside a zip


# ---------------------------------------------------------------------------- records
def _user_turn(instruction: str, inp: str) -> str:
    return f"{instruction}\n\n{inp}" if (inp or "").strip() else instruction


class _Recorder:
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
        done = None
        if key != self.task_key:
            done = self.finish_task()
            self.task_key = key
            prefix = "seed_task" if row["source"] == "seed" else "generated_task"
            self.task = {"id": f"{prefix}_{row['task_id']}", "name": None,
                         "instruction": row["instruction"], "instances": [],
                         "is_classification": bool(row["is_classification"])}
        if row["instance_id"] is not None:
            self.task["instances"].append({"input": row["input"], "output": row["output"]})
        return done

    def finish_task(self) -> dict | None:
        done, self.task, self.task_key = self.task, None, None
        return done


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def _rows_of(batch) -> list[dict]:
    return batch.to_pylist()


def preview_records(pool: Pool, fmt: str, filters: ExportFilters, options: ExportOptions | None = None,
                    limit: int = 3) -> list[str]:
    """The first `limit` records of an export as the file would hold them (JSON
    text for the JSON formats, a CSV line otherwise)."""
    options = options or ExportOptions()
    filters = filters.for_format(fmt)
    recorder = _Recorder(fmt, options)
    out: list[str] = []
    if fmt == "selfinstruct":
        # enough rows for `limit` tasks: a task has at most a handful of instances
        frame = pool.export_preview(filters, limit=max(50, limit * 20))
        for row in frame.to_dict("records"):
            row = _clean_row(row)
            done = recorder.add_to_task(row)
            if done is not None:
                out.append(_dumps(done))
                if len(out) == limit:
                    return out
        last = recorder.finish_task()
        if last is not None and len(out) < limit:
            out.append(_dumps(last))
        return out
    frame = pool.export_preview(filters, limit=limit)
    rows = [_clean_row(r) for r in frame.to_dict("records")]
    if fmt in ("csv", "parquet"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(_csv_values(row))
        return buffer.getvalue().splitlines()[: limit + 1]
    return [_dumps(recorder.record(row)) for row in rows]


def _clean_row(row: dict) -> dict:
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


def _csv_values(row: dict) -> list:
    values = []
    for key in EXPORT_COLUMNS:
        value = row[key]
        if key == "is_classification":
            value = "true" if value else "false"
        values.append("" if value is None else value)
    return values


# ---------------------------------------------------------------------------- writing
def write_export(pool: Pool, fmt: str, out: str | Path | IO[bytes], filters: ExportFilters | None = None,
                 options: ExportOptions | None = None) -> ExportResult:
    """Write the data file of an export to a path or a binary file object,
    streaming batch by batch. Returns what was written."""
    filters = (filters or ExportFilters()).for_format(fmt)
    options = options or ExportOptions()
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    started = time.perf_counter()
    counts = pool.export_counts(filters)
    path = Path(out) if isinstance(out, (str, Path)) else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    reader = pool.export_reader(filters, batch_size=options.batch_size)
    if fmt == "parquet":
        records = _write_parquet(reader, path if path is not None else out)
    else:
        stream = path.open("wb") if path is not None else out
        try:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=False)
            try:
                records = _write_text(fmt, reader, text, options)
                text.flush()
            finally:
                text.detach()
        finally:
            if path is not None:
                stream.close()
    size = path.stat().st_size if path is not None else 0
    return ExportResult(
        format=fmt, path=path, records=records,
        tasks=counts["tasks"] + (counts["empty_tasks"] if filters.include_empty_tasks else 0),
        instances=counts["instances"],
        skipped_tasks=0 if filters.include_empty_tasks else counts["empty_tasks"],
        bytes=size, seconds=time.perf_counter() - started)


def _write_text(fmt: str, reader, text: IO[str], options: ExportOptions) -> int:
    recorder = _Recorder(fmt, options)
    records = 0
    if fmt == "csv":
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for batch in reader:
            rows = _rows_of(batch)
            writer.writerows(_csv_values(row) for row in rows)
            records += len(rows)
        return records
    if fmt == "alpaca":
        text.write("[")
        for batch in reader:
            lines = [_dumps(recorder.record(row)) for row in _rows_of(batch)]
            if lines:
                text.write(("\n" if records == 0 else ",\n") + ",\n".join(lines))
                records += len(lines)
        text.write("\n]\n" if records else "]\n")
        return records
    if fmt == "selfinstruct":
        for batch in reader:
            lines = []
            for row in _rows_of(batch):
                done = recorder.add_to_task(row)
                if done is not None:
                    lines.append(_dumps(done))
            if lines:
                text.write("\n".join(lines) + "\n")
                records += len(lines)
        last = recorder.finish_task()
        if last is not None:
            text.write(_dumps(last) + "\n")
            records += 1
        return records
    for batch in reader:  # chat, prompt-completion: one line per instance
        lines = [_dumps(recorder.record(row)) for row in _rows_of(batch)]
        if lines:
            text.write("\n".join(lines) + "\n")
            records += len(lines)
    return records


def _write_parquet(reader, sink) -> int:
    import pyarrow.parquet as pq

    records = 0
    with pq.ParquetWriter(sink if not isinstance(sink, Path) else str(sink), reader.schema,
                          compression="zstd") as writer:
        for batch in reader:
            if batch.num_rows:
                writer.write_batch(batch)
                records += batch.num_rows
    return records


# ---------------------------------------------------------------------------- the dataset card
@dataclass
class DatasetCard:
    markdown: str
    charts: dict[str, str]      # file name -> SVG text
    stats: dict


def build_card(pool: Pool, fmt: str, filters: ExportFilters | None = None,
               options: ExportOptions | None = None, *, data_file: str = "data",
               charts_dir: str = "charts", title: str | None = None,
               rouge_max_items: int = 20_000) -> DatasetCard:
    """The dataset card of an export: counts, how it was generated (each run's model,
    mode, sampling, thresholds, keywords, prompt versions and seed), the filters,
    the quality study's results, and charts (SVG files under `charts_dir`)."""
    filters = (filters or ExportFilters()).for_format(fmt)
    options = options or ExportOptions()
    info = FORMAT_INFO[fmt]
    counts = pool.export_counts(filters)
    lengths = pool.export_length_stats(filters)
    tasks = pool.export_instructions(filters)
    generated = [text for source, text in tasks if source == "generated"]
    seeds_in_pool = pool.seed_instruction_texts()
    verbs = verb_noun_counts([text for _, text in tasks], top_verbs=15, nouns_per_verb=3)
    rouge = rouge_vs_seeds(seeds_in_pool, generated, max_items=rouge_max_items)
    runs = [_run_summary(pool, run_id) for run_id in pool.export_run_ids(filters)]
    studies = pool.label_summary()

    charts: dict[str, str] = {}
    if counts["tasks"]:
        charts["lengths.svg"] = _svg_length_panels(lengths)
    if len(verbs):
        charts["verbs.svg"] = _svg_verbs(verbs)
    if len(rouge.scores):
        threshold = next((r["config"]["rouge_threshold"] for r in runs
                          if isinstance(r["config"].get("rouge_threshold"), (int, float))), 0.7)
        charts["rouge_vs_seeds.svg"] = _svg_rouge(rouge_histogram(rouge.scores), threshold)

    n_rows = counts["tasks"] + (counts["empty_tasks"] if filters.include_empty_tasks else 0) \
        if info.per_task else counts["instances"]
    title = title or "Self-Instruct dataset"
    md: list[str] = [
        "---",
        f"pretty_name: {json.dumps(title)}",
        "task_categories:",
        "- text-generation",
        "tags:",
        "- self-instruct",
        "- instruction-tuning",
        "- synthetic",
        f"size_categories:\n- {_size_category(n_rows)}",
        "---",
        CARD_MARKER,
        f"# {title}",
        "",
        f"Instruction-tuning data built with selfinstruct {__version__} the Self-Instruct way "
        "(Wang et al., 2023): a language model proposed new tasks round after round from a pool of "
        "human-written seed tasks; heuristic and ROUGE-L novelty filters kept the well-formed, novel "
        "ones; people could review what the filters did. Exported "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} as {info.label}.",
        "",
        "## Contents",
        "",
        "| | Tasks | Instances |",
        "|---|---:|---:|",
        f"| Seed tasks (human-written) | {counts['seed_tasks']:,} | {counts['seed_instances']:,} |",
        f"| Generated tasks | {counts['generated_tasks']:,} | {counts['generated_instances']:,} |",
        f"| **Total** | **{counts['tasks']:,}** | **{counts['instances']:,}** |",
        "",
        f"- {counts['classification_tasks']:,} classification task(s); "
        f"{counts['with_input']:,} instance(s) with a non-empty input.",
        ("- " + (f"{counts['empty_tasks']:,} task(s) matched the filters but have no instance left; "
                 + ("they are written with an empty instance list." if filters.include_empty_tasks
                    else "they are not in the file.")) if counts["empty_tasks"] else
         "- Every task matching the filters has at least one instance."),
        f"- The file holds {n_rows:,} record(s).",
        "",
        "Average length in words (the paper's figures in brackets):",
        "",
        "| Instruction | Input (non-empty) | Output |",
        "|---:|---:|---:|",
        "| " + " | ".join(
            f"{lengths['means'].get(k, 0):.1f} ({PAPER_LENGTHS[k]})" for k in ("instruction", "input", "output"))
        + " |",
        "",
        "## Files",
        "",
        f"- `{data_file}`: {info.description}",
    ]
    md += [f"  {line}" for line in options.describe(fmt)]
    md += [
        "- `README.md`: this card." + (f" Charts are in `{charts_dir}/`." if charts else ""),
        "",
        _loading_hint(fmt, data_file),
        "",
        "## How it was generated",
        "",
    ]
    if not runs:
        md.append("No generated task is in this export (seed tasks only).")
    for run in runs:
        md += _run_section(run)
    md += ["", "## Filters applied", ""]
    md += [f"- {line}" for line in filters.describe()]
    md += ["", "## Quality study", ""]
    md += _quality_section(studies)
    if charts:
        md += ["", "## Charts", ""]
        if "lengths.svg" in charts:
            md += [f"![Word counts of instructions, inputs and outputs]({charts_dir}/lengths.svg)", ""]
        if "verbs.svg" in charts:
            md += [f"![Most common leading verbs and their first nouns]({charts_dir}/verbs.svg)", "",
                   HEURISTIC_NOTE, ""]
        if "rouge_vs_seeds.svg" in charts:
            sample = (f" (a random sample of {len(rouge.scores):,} of {rouge.total:,})"
                      if rouge.sampled else "")
            md += [f"![ROUGE-L of each generated instruction against its most similar seed]"
                   f"({charts_dir}/rouge_vs_seeds.svg)", "",
                   f"ROUGE-L F-measure between each generated instruction{sample} and the most "
                   f"similar of the pool's {rouge.seeds:,} seed instructions: median "
                   f"{rouge.median:.2f}, mean {rouge.mean:.2f}. Low values mean the generated tasks "
                   "are not rewordings of the seeds.", ""]
    md += [
        "", "## Limitations", "",
        "The generated tasks, inputs and outputs were written by a language model and checked by "
        "filters, not (unless a quality study says otherwise above) by people. In the Self-Instruct "
        "paper's own study of 200 generated instructions, 92% described a valid task but only 54% "
        "had every field correct. Review a sample before training on it.",
        "",
    ]
    stats = {"counts": counts, "lengths": {"means": lengths["means"], "counts": lengths["counts"]},
             "records": n_rows, "runs": [r["id"] for r in runs], "studies": len(studies),
             "rouge_median": rouge.median if len(rouge.scores) else None}
    return DatasetCard("\n".join(md), charts, stats)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def _loading_hint(fmt: str, data_file: str) -> str:
    if fmt == "parquet":
        code = f'import pandas as pd\nrows = pd.read_parquet("{data_file}")'
    elif fmt == "csv":
        code = f'import pandas as pd\nrows = pd.read_csv("{data_file}", keep_default_na=False)'
    elif fmt == "alpaca":
        code = f'import json\nrows = json.load(open("{data_file}", encoding="utf-8"))'
    else:
        code = (f'import json\nrows = [json.loads(line) for line in open("{data_file}", '
                'encoding="utf-8")]')
    return f"Load it with:\n\n```python\n{code}\n```"


def _run_summary(pool: Pool, run_id: int) -> dict:
    run = pool.run(run_id) or {"id": run_id, "name": None, "status": "unknown", "config": {}}
    return {"id": run_id, "name": run.get("name"), "status": run.get("status"),
            "config": run.get("config") or {}, "usage": pool.run_usage(run_id),
            "rounds_done": pool.rounds_done(run_id)}


def _sampling_text(sampling: dict | None) -> str:
    if not sampling:
        return "default"
    parts = [f"{k} {sampling[k]}" for k in ("temperature", "top_p", "max_tokens", "presence_penalty",
                                              "frequency_penalty") if sampling.get(k) is not None]
    if sampling.get("stop"):
        parts.append(f"stop {json.dumps(sampling['stop'])}")
    return ", ".join(parts) or "default"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _run_section(run: dict) -> list[str]:
    c = run["config"]
    usage = run["usage"]
    name = f" ({_md_cell(run['name'])})" if run.get("name") else ""
    generation = c.get("generation", "selfinstruct")
    rows = [
        ("Model", f"`{c.get('model', '?')}` via {c.get('backend', '?')}"
                  + (" (the offline demo: replayed examples, not a language model)"
                     if c.get("backend") == "offline" else "")),
        ("Mode", c.get("mode", "?")),
        ("Generation", "Self-Instruct (numbered list, then classification and instances)"
         if generation == "selfinstruct" else "Alpaca-style (whole tasks per request)"),
        ("Rounds done", f"{run['rounds_done']} ({run['status']})"),
        ("Requests / tokens / cost", f"{usage['requests']:,} / {usage['tokens']:,} / ${usage['cost_usd']:.2f}"),
        ("Prompts", f"{c.get('requests_per_round', '?')} requests per round; "
                    + (f"{c.get('human_examples', '?')} seed + {c.get('machine_examples', '?')} generated "
                       f"examples, {c.get('new_per_request', '?')} new tasks asked per request"
                       if generation == "selfinstruct" else
                       f"{c.get('batch_examples', '?')} examples, {c.get('batch_size', '?')} tasks asked "
                       "per request")),
        ("Sampling (instructions)", _sampling_text(c.get("sampling"))),
        ("Sampling (classification)", _sampling_text(c.get("classify_sampling"))),
        ("Sampling (instances)", _sampling_text(c.get("instance_sampling"))),
        ("ROUGE-L threshold", f"reject above {c.get('rouge_threshold', '?')}"),
        ("Instruction length", f"{c.get('min_words', '?')} to {c.get('max_words', '?')} words"),
        ("Keywords", ", ".join(c.get("keywords") or []) or "none"),
        ("Max instances per task", c.get("max_instances", "?")),
        ("Prompt versions", ", ".join(f"{k} {v}" for k, v in (c.get("prompt_versions") or {}).items()) or "?"),
        ("Seed", c.get("seed", "?")),
    ]
    out = [f"### Run {run['id']}{name}", "", "| Setting | Value |", "|---|---|"]
    out += [f"| {k} | {_md_cell(v)} |" for k, v in rows]
    out.append("")
    return out


def _pct(yes: int, answered: int) -> str:
    return f"{yes / answered:.0%} ({yes}/{answered})" if answered else "–"


def _quality_section(studies: list[dict]) -> list[str]:
    if not studies:
        return ["No quality study has labels in this pool yet."]
    out = ["Labels given in selfinstruct's quality studies (each label is one annotator's answers "
           "about one instruction with one of its instances; rates are over the labels that answer "
           "the question), with the paper's figures for comparison:", "",
           "| Study | Items labeled | Annotators | Valid task | Input appropriate | Output correct | All three |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for s in studies:
        out.append(
            f"| {_md_cell(s['name'])} | {s['items_labeled']}/{s['sample_size']} | {s['annotators']} | "
            f"{_pct(s['valid_task_yes'], s['valid_task_answered'])} | "
            f"{_pct(s['input_ok_yes'], s['input_ok_answered'])} | "
            f"{_pct(s['output_ok_yes'], s['output_ok_answered'])} | "
            f"{_pct(s['all_yes'], s['all_answered'])} |")
    p = PAPER_QUALITY
    out.append(f"| Self-Instruct paper (GPT-3) | 200/200 | expert | {p['valid_task']:.0%} | {p['input_ok']:.0%} | "
               f"{p['output_ok']:.0%} | {p['all']:.0%} |")
    out.append("")
    out.append("The study samples the whole accepted pool, not only this export.")
    return out


# ---------------------------------------------------------------------------- SVG charts
_FONT = 'font-family="Helvetica, Arial, sans-serif"'
_BAR = "#4c78a8"
_MUTED = "#9aa5b1"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f"<title>{_xml_escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        *body, "</svg>", ""])


def _text(x: float, y: float, text: str, *, size: int = 12, anchor: str = "start",
          weight: str = "normal", fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}" {_FONT}>{_xml_escape(str(text))}</text>')


def _svg_length_panels(lengths: dict) -> str:
    hist = lengths["histogram"]
    width_each, height, top, bottom, left = 300, 230, 46, 40, 44
    fields = [("instruction", "Instructions"), ("input", "Inputs (non-empty)"), ("output", "Outputs")]
    bw, cap = lengths["bin_width"], lengths["cap"]
    n_bins = cap // bw + 1
    body = [_text(10, 20, "Length in words", size=15, weight="bold")]
    for p, (key, label) in enumerate(fields):
        x0 = p * width_each + left
        plot_w, plot_h = width_each - left - 16, height - top - bottom
        rows = hist[hist["field"] == key]
        counts = {int(b): int(n) for b, n in zip(rows["bin_start"], rows["n"])}
        peak = max(counts.values(), default=0) or 1
        mean = lengths["means"].get(key)
        body.append(_text(x0, top - 10, f"{label}" + (f" · mean {mean:.1f}" if mean is not None else ""),
                          size=12, weight="bold"))
        body.append(f'<line x1="{x0}" y1="{top + plot_h}" x2="{x0 + plot_w}" y2="{top + plot_h}" '
                    f'stroke="#444"/>')
        body.append(_text(x0 - 4, top + 8, f"{peak:,}", size=10, anchor="end", fill="#555"))
        body.append(_text(x0 - 4, top + plot_h, "0", size=10, anchor="end", fill="#555"))
        step = plot_w / n_bins
        for i in range(n_bins):
            n = counts.get(i * bw, 0)
            if not n:
                continue
            h = plot_h * n / peak
            body.append(f'<rect x="{x0 + i * step + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
                        f'width="{max(step - 1, 1):.1f}" height="{h:.1f}" fill="{_BAR}"/>')
        for tick in range(0, cap + 1, 25):
            tx = x0 + (tick // bw) * step
            body.append(_text(tx, top + plot_h + 14, f"{tick}+" if tick == cap else str(tick),
                              size=10, anchor="middle", fill="#555"))
        body.append(_text(x0 + plot_w / 2, top + plot_h + 30, "words", size=10, anchor="middle", fill="#555"))
    return _svg(width_each * 3, height, body, "Word counts of instructions, inputs and outputs")


def _svg_verbs(verbs) -> str:
    rows = verbs[verbs["verb"] != "(none)"]
    order = list(dict.fromkeys(rows["verb"]))
    none_total = int(verbs.loc[verbs["verb"] == "(none)", "count"].sum())
    line_h, top, left, bar_w = 24, 44, 110, 360
    height = top + line_h * max(len(order), 1) + 40
    width = left + bar_w + 330
    peak = max((int(rows[rows["verb"] == v]["verb_total"].iloc[0]) for v in order), default=1) or 1
    body = [_text(10, 20, "Most common leading verbs, with their most common first nouns", size=15,
                  weight="bold")]
    for i, verb in enumerate(order):
        sub = rows[rows["verb"] == verb]
        total = int(sub["verb_total"].iloc[0])
        y = top + i * line_h
        w = bar_w * total / peak
        body.append(_text(left - 8, y + 15, verb, size=12, anchor="end"))
        body.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{line_h - 7}" fill="{_BAR}"/>')
        nouns = [f"{n} {c}" for n, c in zip(sub["noun"], sub["count"]) if n not in ("(other)",)]
        body.append(_text(left + w + 6, y + 15, f"{total:,} — " + ", ".join(nouns), size=11, fill="#333"))
    footer = "Heuristic: first imperative verb and the next content word; not a parser."
    if none_total:
        footer = f"{none_total:,} instruction(s) with no recognised leading verb. " + footer
    body.append(_text(10, height - 14, footer, size=10, fill="#555"))
    return _svg(width, height, body, "Most common leading verbs and their first nouns")


def _svg_rouge(hist, threshold: float) -> str:
    width, height, top, bottom, left, right = 640, 260, 40, 44, 56, 16
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = int(hist["n"].max()) or 1
    body = [_text(10, 20, "ROUGE-L against the most similar seed instruction", size=15, weight="bold")]
    step = plot_w / len(hist)
    for i, n in enumerate(hist["n"]):
        if not n:
            continue
        h = plot_h * int(n) / peak
        body.append(f'<rect x="{left + i * step + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{step - 1:.1f}" height="{h:.1f}" fill="{_BAR}"/>')
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>')
    for tick in range(0, 11, 2):
        body.append(_text(left + plot_w * tick / 10, top + plot_h + 14, f"{tick / 10:.1f}", size=10,
                          anchor="middle", fill="#555"))
    tx = left + plot_w * float(threshold)
    body.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{top + plot_h}" stroke="#c0392b" '
                f'stroke-dasharray="4 3"/>')
    body.append(_text(tx + 4, top + 10, f"novelty threshold {threshold}", size=10, fill="#c0392b"))
    body.append(_text(left - 4, top + 8, f"{peak:,}", size=10, anchor="end", fill="#555"))
    body.append(_text(left - 4, top + plot_h, "0", size=10, anchor="end", fill="#555"))
    body.append(_text(left + plot_w / 2, height - 10, "ROUGE-L F-measure", size=11, anchor="middle",
                      fill="#555"))
    return _svg(width, height, body, "ROUGE-L of each generated instruction against its most similar seed")


# ---------------------------------------------------------------------------- whole exports
def _card_path_beside(data_path: Path) -> Path:
    """README.md beside the data, unless a README.md that is not a card of ours is
    there already: then `<stem>.card.md`."""
    readme = data_path.with_name("README.md")
    if readme.exists():
        try:
            ours = CARD_MARKER in readme.read_text(encoding="utf-8", errors="replace")[:4000]
        except OSError:
            ours = False
        if not ours:
            return data_path.with_name(f"{data_path.stem}.card.md")
    return readme


def export_dataset(pool: Pool, fmt: str, out: str | Path, filters: ExportFilters | None = None,
                   options: ExportOptions | None = None, *, card: bool = True,
                   title: str | None = None) -> ExportResult:
    """Write an export to `out`. With a path ending in `.zip`: one archive holding
    the data file (named after the archive), README.md and charts/. Otherwise the
    data file at `out`, and with `card`, README.md (or `<stem>.card.md` when an
    unrelated README.md is there) and `<stem>_charts/` beside it."""
    filters = filters or ExportFilters()
    options = options or ExportOptions()
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if out.suffix.lower() == ".zip":
        data_name = out.stem + FORMAT_INFO[fmt].extension
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".selfinstruct-export-") as tmp:
            data_path = Path(tmp) / data_name
            result = write_export(pool, fmt, data_path, filters, options)
            files = [data_name]
            built = build_card(pool, fmt, filters, options, data_file=data_name, charts_dir="charts",
                               title=title) if card else None
            partial = out.with_name(out.name + ".part")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                zf.write(data_path, data_name)
                if built is not None:
                    zf.writestr("README.md", built.markdown)
                    files.append("README.md")
                    for name, svg in built.charts.items():
                        zf.writestr(f"charts/{name}", svg)
                        files.append(f"charts/{name}")
            partial.replace(out)
        result.path, result.files = out, files
        result.bytes = out.stat().st_size
        result.seconds = time.perf_counter() - started
        return result
    result = write_export(pool, fmt, out, filters, options)
    if card:
        charts_dir = f"{out.stem}_charts"
        built = build_card(pool, fmt, filters, options, data_file=out.name, charts_dir=charts_dir,
                           title=title)
        card_path = _card_path_beside(out)
        card_path.write_text(built.markdown, encoding="utf-8")
        result.card_path = card_path
        if built.charts:
            folder = out.with_name(charts_dir)
            folder.mkdir(exist_ok=True)
            for name, svg in built.charts.items():
                (folder / name).write_text(svg, encoding="utf-8")
                result.chart_paths.append(folder / name)
    result.seconds = time.perf_counter() - started
    return result


def export_archive_bytes(pool: Pool, fmt: str, filters: ExportFilters | None = None,
                         options: ExportOptions | None = None, *, name: str = "selfinstruct-data",
                         card: bool = True, title: str | None = None) -> bytes:
    """A whole export as bytes (for a browser download): a zip with the data file,
    README.md and charts/ when `card`, else the data file alone. Built on disk in a
    temporary folder; only the finished file is read into memory."""
    with tempfile.TemporaryDirectory(prefix="selfinstruct-export-") as tmp:
        if card:
            path = Path(tmp) / f"{name}.zip"
        else:
            path = Path(tmp) / f"{name}{FORMAT_INFO[fmt].extension}"
        export_dataset(pool, fmt, path, filters, options, card=card, title=title)
        return path.read_bytes()


def download_name(fmt: str, *, card: bool, name: str = "selfinstruct-data") -> str:
    return f"{name}.zip" if card else f"{name}{FORMAT_INFO[fmt].extension}"


def iter_records(pool: Pool, fmt: str, filters: ExportFilters | None = None,
                 options: ExportOptions | None = None) -> Iterator[dict]:
    """The records of a JSON format one by one (for tests and scripts)."""
    if fmt in ("parquet", "csv"):
        raise ValueError("iter_records gives JSON records; read Parquet/CSV files with pandas.")
    filters = (filters or ExportFilters()).for_format(fmt)
    recorder = _Recorder(fmt, options or ExportOptions())
    for batch in pool.export_reader(filters):
        for row in _rows_of(batch):
            if fmt == "selfinstruct":
                done = recorder.add_to_task(row)
                if done is not None:
                    yield done
            else:
                yield recorder.record(row)
    if fmt == "selfinstruct":
        last = recorder.finish_task()
        if last is not None:
            yield last


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
