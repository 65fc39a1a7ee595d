"""Read and validate seed task files, then import them into the pool.

Three formats:
- Self-Instruct JSONL: one task per line,
  `{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}`.
- Alpaca JSON: a list of `{"instruction", "input", "output"}`; rows sharing an
  instruction become the instances of one task.
- CSV with a header `instruction,input,output,is_classification` (only `instruction`
  is required); rows sharing an instruction become one task, as in Alpaca JSON.

Every problem is reported with its line number, and an import writes nothing
unless every row is valid (or the caller asks for the valid rows only).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from . import actions
from .store import PACKAGE_ROOT, Pool

STARTER_SEEDS_PATH = PACKAGE_ROOT / "data" / "seed_tasks.jsonl"
MAX_SEED_FILE_BYTES = 10 * 1024 * 1024
FORMATS = ("selfinstruct", "alpaca", "csv")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


@dataclass
class SeedTask:
    instruction: str
    instances: list[dict] = field(default_factory=list)
    is_classification: bool = False
    name: str | None = None
    source_id: str | None = None
    line: int = 0  # where the task starts in its file


@dataclass(frozen=True)
class SeedIssue:
    line: int      # 1-based; 0 when the problem is the whole file
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class SeedFileReport:
    format: str
    tasks: list[SeedTask]
    issues: list[SeedIssue]
    rows: int = 0   # data rows read (lines, list items or CSV rows)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def bad_lines(self) -> list[int]:
        return sorted({i.line for i in self.issues})


class SeedImportError(Exception):
    def __init__(self, report: SeedFileReport, source: str):
        self.report = report
        shown = "\n".join(f"  {issue}" for issue in report.issues[:20])
        more = len(report.issues) - 20
        if more > 0:
            shown += f"\n  ... and {more} more"
        super().__init__(
            f"{source}: {len(report.issues)} problem(s) in the seed file, nothing was imported.\n"
            f"{shown}\nFix them, or import only the valid rows (--valid-only)."
        )


@dataclass(frozen=True)
class ImportResult:
    imported: int           # tasks written
    instances: int
    skipped_lines: list[int]
    report: SeedFileReport


# -- format detection ---------------------------------------------------------
def detect_format(filename: str | None, text: str) -> str:
    name = (filename or "").lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "selfinstruct"
    if name.endswith(".json"):
        return "alpaca"
    if name.endswith(".csv"):
        return "csv"
    head = text.lstrip()[:1]
    if head == "[":
        return "alpaca"
    if head == "{":
        return "selfinstruct"
    return "csv"


def _decode(data: bytes) -> tuple[str | None, SeedIssue | None]:
    if len(data) > MAX_SEED_FILE_BYTES:
        return None, SeedIssue(0, f"The file is {len(data) / 1e6:.1f} MB; seed files are limited to "
                                  f"{MAX_SEED_FILE_BYTES // (1024 * 1024)} MB.")
    if b"\x00" in data[:8192]:
        return None, SeedIssue(0, "This looks like a binary file, not a text seed file "
                                  "(JSONL, JSON or CSV).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, SeedIssue(line, f"The file is not UTF-8 text: byte 0x{data[exc.start]:02x} at "
                                     f"offset {exc.start} cannot be decoded. Save it as UTF-8.")
    return text, None


def read_seed_file(data: bytes | str | Path, filename: str | None = None, *,
                   fmt: str | None = None, existing: Iterable[str] = ()) -> SeedFileReport:
    """Parse and validate a seed file without touching any pool.

    `data` is the file's bytes, or a path. `existing` holds instructions already
    in the pool; a row repeating one is reported."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        filename = filename or path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            return SeedFileReport(fmt or "unknown", [], [SeedIssue(0, f"Cannot read {path}: {exc.strerror}.")])
        if size > MAX_SEED_FILE_BYTES:
            return SeedFileReport(fmt or "unknown", [], [SeedIssue(
                0, f"The file is {size / 1e6:.1f} MB; seed files are limited to "
                   f"{MAX_SEED_FILE_BYTES // (1024 * 1024)} MB.")])
        data = path.read_bytes()
    text, problem = _decode(data)
    if problem:
        return SeedFileReport(fmt or "unknown", [], [problem])
    fmt = fmt or detect_format(filename, text)
    if fmt not in FORMATS:
        raise ValueError(f"Unknown seed format {fmt!r}; use one of {', '.join(FORMATS)}.")
    reader = {"selfinstruct": _read_selfinstruct, "alpaca": _read_alpaca, "csv": _read_csv}[fmt]
    report = reader(text)
    report.format = fmt
    _check_against_pool(report, set(existing))
    if not report.tasks and not report.issues:
        report.issues.append(SeedIssue(0, "The file holds no seed tasks."))
    return report


def _check_against_pool(report: SeedFileReport, existing: set[str]) -> None:
    if not existing:
        return
    kept = []
    for task in report.tasks:
        if task.instruction in existing:
            report.issues.append(SeedIssue(task.line, f"This instruction is already in the pool: "
                                                      f"{_short(task.instruction)}"))
        else:
            kept.append(task)
    report.tasks = kept
    report.issues.sort(key=lambda i: i.line)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _instruction_of(obj: dict, line: int, issues: list[SeedIssue]) -> str | None:
    if "instruction" not in obj:
        issues.append(SeedIssue(line, 'Missing "instruction".'))
        return None
    value = obj["instruction"]
    if not isinstance(value, str):
        issues.append(SeedIssue(line, f'"instruction" must be text, found {_type_name(value)}.'))
        return None
    value = value.strip()
    if not value:
        issues.append(SeedIssue(line, '"instruction" is empty.'))
        return None
    return value


def _bool_of(obj: dict, key: str, line: int, issues: list[SeedIssue]) -> bool | None:
    value = obj.get(key, False)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    issues.append(SeedIssue(line, f'"{key}" must be true or false, found {_type_name(value)} {value!r}.'))
    return None


def _text_field(obj: dict, key: str, line: int, issues: list[SeedIssue], where: str,
                required: bool) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            issues.append(SeedIssue(line, f'{where} has no "{key}".'))
            return None
        return ""
    value = obj[key]
    if not isinstance(value, str):
        issues.append(SeedIssue(line, f'{where}: "{key}" must be text, found {_type_name(value)}.'))
        return None
    return value.strip()


# -- Self-Instruct JSONL --------------------------------------------------------
def _read_selfinstruct(text: str) -> SeedFileReport:
    tasks: list[SeedTask] = []
    issues: list[SeedIssue] = []
    first_line_of: dict[str, int] = {}
    rows = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        rows += 1
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            issues.append(SeedIssue(line_no, f"Not valid JSON ({exc.msg} at column {exc.colno})."))
            continue
        if not isinstance(obj, dict):
            issues.append(SeedIssue(line_no, f"Expected a JSON object, found {_type_name(obj)}."))
            continue
        before = len(issues)
        instruction = _instruction_of(obj, line_no, issues)
        is_clf = _bool_of(obj, "is_classification", line_no, issues)
        instances = _instances_of(obj, line_no, issues)
        for key in ("id", "name"):
            if key in obj and obj[key] is not None and not isinstance(obj[key], (str, int)):
                issues.append(SeedIssue(line_no, f'"{key}" must be text, found {_type_name(obj[key])}.'))
        if instruction is not None and instruction in first_line_of:
            issues.append(SeedIssue(line_no, f"The same instruction is already on line "
                                             f"{first_line_of[instruction]}: {_short(instruction)}"))
        if len(issues) > before:
            continue
        first_line_of[instruction] = line_no
        tasks.append(SeedTask(
            instruction=instruction, instances=instances, is_classification=is_clf,
            name=None if obj.get("name") is None else str(obj["name"]),
            source_id=None if obj.get("id") is None else str(obj["id"]), line=line_no,
        ))
    return SeedFileReport("selfinstruct", tasks, issues, rows)


def _instances_of(obj: dict, line: int, issues: list[SeedIssue]) -> list[dict]:
    raw = obj.get("instances", [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        issues.append(SeedIssue(line, f'"instances" must be a list, found {_type_name(raw)}.'))
        return []
    instances = []
    for n, inst in enumerate(raw, start=1):
        where = f"instance {n}"
        if not isinstance(inst, dict):
            issues.append(SeedIssue(line, f"{where} must be an object with input and output, "
                                          f"found {_type_name(inst)}."))
            continue
        inp = _text_field(inst, "input", line, issues, where, required=False)
        out = _text_field(inst, "output", line, issues, where, required=True)
        if inp is not None and out is not None:
            instances.append({"input": inp, "output": out})
    return instances


# -- grouped formats (Alpaca JSON, CSV) ---------------------------------------------
class _Grouper:
    """Rows sharing an instruction become one task, in first-seen order."""

    def __init__(self) -> None:
        self.tasks: dict[str, SeedTask] = {}

    def add(self, line: int, instruction: str, inp: str, out: str, is_clf: bool) -> None:
        task = self.tasks.get(instruction)
        if task is None:
            task = self.tasks[instruction] = SeedTask(instruction=instruction, line=line)
        task.instances.append({"input": inp, "output": out})
        task.is_classification = task.is_classification or is_clf


def _read_alpaca(text: str) -> SeedFileReport:
    issues: list[SeedIssue] = []
    stripped = text.lstrip()
    if not stripped.startswith("["):
        try:
            found = _type_name(json.loads(text))
        except json.JSONDecodeError as exc:
            return SeedFileReport("alpaca", [], [SeedIssue(exc.lineno, f"Not valid JSON ({exc.msg}).")])
        return SeedFileReport("alpaca", [], [SeedIssue(1, "Expected a JSON list of "
                                                          '{"instruction", "input", "output"} objects, '
                                                          f"found {found}.")])
    decoder = json.JSONDecoder()
    pos = len(text) - len(stripped) + 1
    grouper = _Grouper()
    rows = 0

    def line_at(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            issues.append(SeedIssue(line_at(pos), "The JSON list is not closed with ']'."))
            break
        if text[pos] == "]":
            break
        start_line = line_at(pos)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            issues.append(SeedIssue(exc.lineno, f"Not valid JSON ({exc.msg}); reading stopped here."))
            break
        pos = end
        rows += 1
        if not isinstance(obj, dict):
            issues.append(SeedIssue(start_line, f"Expected an object with instruction, input and output, "
                                                f"found {_type_name(obj)}."))
            continue
        before = len(issues)
        instruction = _instruction_of(obj, start_line, issues)
        inp = _text_field(obj, "input", start_line, issues, "This row", required=False)
        out = _text_field(obj, "output", start_line, issues, "This row", required=True)
        is_clf = _bool_of(obj, "is_classification", start_line, issues)
        if len(issues) == before:
            grouper.add(start_line, instruction, inp, out, is_clf)
    return SeedFileReport("alpaca", list(grouper.tasks.values()), issues, rows)


def _read_csv(text: str) -> SeedFileReport:
    issues: list[SeedIssue] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return SeedFileReport("csv", [], [SeedIssue(0, "The CSV file is empty.")])
    except csv.Error as exc:
        return SeedFileReport("csv", [], [SeedIssue(1, f"Not a readable CSV header ({exc}).")])
    columns = [h.strip().lower() for h in header]
    if "instruction" not in columns:
        return SeedFileReport("csv", [], [SeedIssue(1, "The CSV header must name an 'instruction' column "
                                                       f"(found: {', '.join(columns) or 'nothing'}).")])
    grouper = _Grouper()
    rows = 0
    line_no = reader.line_num
    while True:
        start_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            issues.append(SeedIssue(start_line, f"Not readable as CSV ({exc}); reading stopped here."))
            break
        line_no = start_line
        if not any(v.strip() for v in values):
            continue
        rows += 1
        if len(values) != len(columns):
            issues.append(SeedIssue(line_no, f"Expected {len(columns)} fields like the header, "
                                             f"found {len(values)}."))
            continue
        row = dict(zip(columns, values))
        instruction = row["instruction"].strip()
        if not instruction:
            issues.append(SeedIssue(line_no, '"instruction" is empty.'))
            continue
        flag = row.get("is_classification", "").strip().lower()
        if flag not in _TRUE | _FALSE:
            issues.append(SeedIssue(line_no, f"is_classification must be true or false, found {flag!r}."))
            continue
        grouper.add(line_no, instruction, row.get("input", "").strip(), row.get("output", "").strip(),
                    flag in _TRUE)
    return SeedFileReport("csv", list(grouper.tasks.values()), issues, rows)


# -- import -------------------------------------------------------------------
def import_seeds(pool: Pool, data: bytes | str | Path, filename: str | None = None, *,
                 fmt: str | None = None, valid_only: bool = False, origin: str | None = None,
                 actor: str = "user") -> ImportResult:
    """Validate then write. Raises SeedImportError (nothing written) when the file has
    problems, unless `valid_only`, in which case the valid tasks are written."""
    report = read_seed_file(data, filename, fmt=fmt)
    _check_against_pool(report, pool.existing_instructions(t.instruction for t in report.tasks))
    source = filename or (str(data) if isinstance(data, (str, Path)) else "upload")
    if report.issues and not valid_only:
        raise SeedImportError(report, source)
    if report.tasks:
        actions.import_seeds(pool, report.tasks, origin=origin or Path(source).name, actor=actor)
    return ImportResult(
        imported=len(report.tasks),
        instances=sum(len(t.instances) for t in report.tasks),
        skipped_lines=report.bad_lines,
        report=report,
    )


def load_starter_seeds(pool: Pool, *, actor: str = "user") -> ImportResult:
    """Import the bundled starter seeds, skipping any already in the pool."""
    return import_seeds(pool, STARTER_SEEDS_PATH, valid_only=True, origin="starter", actor=actor)


# -- edits from a table editor --------------------------------------------------
EDITABLE_COLUMNS = ("name", "instruction", "input", "output", "is_classification")


@dataclass(frozen=True)
class SeedEditResult:
    changed: int
    added: int
    deleted: int
    issues: list[str]

    @property
    def ok(self) -> bool:
        return not self.issues


def apply_seed_edits(pool: Pool, table, edits: dict, *, actor: str = "user") -> SeedEditResult:
    """Apply a table editor's changes to the seeds shown in `table` (as returned by
    `Pool.seed_table()`): `edits` holds `edited_rows` ({row position: {column: value}}),
    `added_rows` (list of {column: value}) and `deleted_rows` (row positions).

    All or nothing: when any change is invalid, nothing is written and the issues
    say which row and why."""
    edited = {int(k): v for k, v in (edits.get("edited_rows") or {}).items()}
    added = list(edits.get("added_rows") or [])
    deleted = sorted({int(i) for i in edits.get("deleted_rows") or []})
    issues: list[str] = []
    ids = [int(i) for i in table["id"]]
    instructions = {str(t).strip(): pos for pos, t in enumerate(table["instruction"]) if pos not in deleted}

    def check_instruction(value, where: str, own_pos: int | None) -> str | None:
        text = str(value or "").strip()
        if not text:
            issues.append(f"{where}: the instruction is empty.")
            return None
        holder = instructions.get(text)
        if holder is not None and holder != own_pos:
            issues.append(f"{where}: the same instruction is already in row {holder + 1}.")
            return None
        return text

    updates: list[tuple[int, dict]] = []
    for pos, change in sorted(edited.items()):
        if pos in deleted or pos >= len(ids):
            continue
        change = {k: v for k, v in change.items() if k in EDITABLE_COLUMNS}
        if "instruction" in change:
            text = check_instruction(change["instruction"], f"Row {pos + 1}", pos)
            if text is None:
                continue
            instructions.pop(str(table["instruction"].iloc[pos]).strip(), None)
            instructions[text] = pos
            change["instruction"] = text
        for key in ("name", "input", "output"):
            if key in change:
                change[key] = "" if change[key] is None else str(change[key]).strip()
        if "is_classification" in change:
            change["is_classification"] = bool(change["is_classification"])
        updates.append((ids[pos], change))

    new_tasks: list[SeedTask] = []
    for n, row in enumerate(added, start=1):
        where = f"New row {n}"
        text = check_instruction(row.get("instruction"), where, None)
        if text is None:
            continue
        instructions[text] = len(ids) + n - 1
        inp, out = str(row.get("input") or "").strip(), str(row.get("output") or "").strip()
        new_tasks.append(SeedTask(
            instruction=text, name=(str(row["name"]).strip() or None) if row.get("name") else None,
            is_classification=bool(row.get("is_classification") or False),
            instances=[{"input": inp, "output": out}] if (inp or out) else [],
        ))
    if new_tasks:
        taken = pool.existing_instructions(t.instruction for t in new_tasks)
        for task in new_tasks:
            if task.instruction in taken:
                issues.append(f"New row: this instruction is already in the pool: {_short(task.instruction)}")

    if issues:
        return SeedEditResult(0, 0, 0, issues)
    with pool.transaction():
        for seed_id, change in updates:
            if change:
                actions.edit_seed(pool, seed_id, actor=actor, **change)
        if new_tasks:
            actions.import_seeds(pool, new_tasks, origin="editor", actor=actor)
        gone = [ids[pos] for pos in deleted if pos < len(ids)]
        if gone:
            actions.delete_seeds(pool, gone, actor=actor)
    return SeedEditResult(len(updates), len(new_tasks), len(deleted), [])
