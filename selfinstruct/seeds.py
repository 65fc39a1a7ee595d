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

Files are read as a stream, a megabyte at a time (Alpaca's one big JSON list too), so a
gigabyte file never sits in memory whole: each row is validated as it is read, the rules
that span rows (one task per instruction, repeats, instructions already in the pool) keep
only the instructions seen, and an import stages the instances in a temporary table of
the pool's connection until the whole file has proved valid; then one transaction writes
everything with one audit row. `progress(bytes_read, total_bytes)` is called as it reads.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from . import actions
from .datadir import STARTER_SEEDS_PATH
from .store import Pool

MAX_SEED_FILE_BYTES = 4 * 1024 ** 3   # a sanity bound; the app's upload limit is .streamlit/config.toml's
FORMATS = ("selfinstruct", "alpaca", "csv")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
CHUNK_BYTES = 1 << 20          # read this much at a time
MAX_ROW_CHARS = 64 << 20       # one JSON row bigger than this is refused (an unclosed quote, usually)
MAX_KEPT_ISSUES = 10_000       # problems kept word for word; past this they are only counted
_BATCH_ROWS = 5_000            # rows checked against the pool with one query
_STAGE_ROWS = 50_000           # instances sent to the staging table at a time
INVALID, IN_POOL = "invalid", "in_pool"

ProgressFn = Callable[[int, "int | None"], None]


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
    kind: str = INVALID   # or IN_POOL: the row is fine, its instruction is already in the pool

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class SeedFileReport:
    format: str
    tasks: list[SeedTask]          # empty after an import (the tasks went to the pool)
    issues: list[SeedIssue]        # the first MAX_KEPT_ISSUES problems
    rows: int = 0                  # data rows read (lines, list items or CSV rows)
    more_issues: int = 0           # problems past MAX_KEPT_ISSUES, counted only
    in_pool: int = 0               # rows skipped because their instruction is in the pool

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def problem_count(self) -> int:
        return len(self.issues) + self.more_issues

    @property
    def bad_lines(self) -> list[int]:
        return sorted({i.line for i in self.issues})

    @property
    def only_in_pool(self) -> bool:
        """Every problem is a row already in the pool (a file imported again)."""
        return bool(self.issues) and self.in_pool == self.problem_count

    def add(self, issue: SeedIssue) -> None:
        if issue.kind == IN_POOL:
            self.in_pool += 1
        if len(self.issues) < MAX_KEPT_ISSUES:
            self.issues.append(issue)
        else:
            self.more_issues += 1


class SeedImportError(Exception):
    def __init__(self, report: SeedFileReport, source: str):
        self.report = report
        shown = "\n".join(f"  {issue}" for issue in report.issues[:20])
        more = report.problem_count - 20
        if more > 0:
            shown += f"\n  ... and {more} more"
        super().__init__(
            f"{source}: {report.problem_count} problem(s) in the seed file, nothing was imported.\n"
            f"{shown}\nFix them, or import only the valid rows (--valid-only)."
        )


def _line_list(lines: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit:,} more" if len(lines) > limit else "")


@dataclass(frozen=True)
class ImportResult:
    imported: int           # tasks written
    instances: int
    skipped_lines: list[int]
    report: SeedFileReport

    @property
    def in_pool_lines(self) -> list[int]:
        return sorted({i.line for i in self.report.issues if i.kind == IN_POOL})

    @property
    def invalid_lines(self) -> list[int]:
        return sorted({i.line for i in self.report.issues if i.kind != IN_POOL and i.line})

    def skipped_summary(self) -> str:
        """Why lines were skipped, grouped by reason ('' when none was)."""
        parts = []
        if self.report.in_pool:
            parts.append(f"{self.report.in_pool:,} line(s) already in the pool ({_line_list(self.in_pool_lines)})")
        whole = [i.message for i in self.report.issues if not i.line]
        invalid = self.report.problem_count - self.report.in_pool - len(whole)
        if invalid:
            parts.append(f"{invalid:,} invalid line(s) ({_line_list(self.invalid_lines)})")
        return "; ".join(parts + [m[:1].lower() + m[1:].rstrip(".") for m in whole])

    def summary(self, source: str) -> str:
        """One sentence for the page and the CLI: what was imported, and what was skipped and why."""
        skipped = self.skipped_summary()
        if not self.imported:
            return f"Nothing new was imported from {source}" + (f": {skipped}." if skipped else ".")
        return (f"Imported {self.imported:,} task(s) with {self.instances:,} instance(s) from {source}."
                + (f" Skipped {skipped}." if skipped else ""))


class _Fatal(Exception):
    """A problem after which the file cannot be read on."""

    def __init__(self, issue: SeedIssue):
        super().__init__(str(issue))
        self.issue = issue


_NESTED = ("The JSON is nested too deeply to read; a seed row holds text fields and a list of "
           "instances, not nested lists or objects.")


# -- opening and decoding ---------------------------------------------------------
def _too_big(size: int) -> SeedIssue:
    return SeedIssue(0, f"The file is {size / 1e6:.1f} MB; seed files are limited to "
                        f"{MAX_SEED_FILE_BYTES // (1024 * 1024)} MB.")


def _open(data) -> tuple[IO[bytes], int | None, str | None, bool]:
    """(binary stream, size or None, file name, whether we opened it)."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        return path.open("rb"), path.stat().st_size, path.name, True
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(data), len(data), None, True
    size = getattr(data, "size", None)
    try:
        data.seek(0)
        if size is None:
            size = data.seek(0, io.SEEK_END)
            data.seek(0)
    except (AttributeError, OSError, ValueError):
        pass
    return data, size, getattr(data, "name", None), False


def _decoded(stream: IO[bytes], total: int | None, progress: ProgressFn | None) -> Iterator[str]:
    """The file as UTF-8 text chunks (a BOM dropped); a decoding problem is _Fatal with its line."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    done = newlines = 0
    first = True
    while True:
        raw = stream.read(CHUNK_BYTES)
        if first:
            first = False
            if _looks_binary(raw[:8192]):
                raise _Fatal(SeedIssue(0, "This looks like a binary file, not a text seed file "
                                          "(JSONL, JSON or CSV)."))
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            where = max(exc.start - (len(exc.object) - len(raw)), 0)
            line = newlines + raw[:where].count(b"\n") + 1
            raise _Fatal(SeedIssue(line, f"The file is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
                                         f"offset {done + where} cannot be decoded. Save it as UTF-8.")) from None
        done += len(raw)
        newlines += raw.count(b"\n")
        if progress is not None:
            progress(done, total)
        if text:
            yield text
        if not raw:
            return


def _looks_binary(sample: bytes) -> bool:
    """NUL bytes in a sample that is not UTF-8, or many of them (UTF-16 text, images); a stray
    NUL in a text file is left to the row checks, which name its line and field."""
    nuls = sample.count(b"\x00")
    if not nuls:
        return False
    if nuls > max(2, len(sample) // 100):
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 4   # not just a character cut at the sample's end
    return False


def _lines(chunks: Iterable[str], keepends: bool) -> Iterator[str]:
    """Lines split on \\n only (a JSON string may hold U+2028, a CSV field \\r)."""
    rest = ""
    for chunk in chunks:
        parts = (rest + chunk).split("\n")
        rest = parts.pop()
        if keepends:
            yield from (p + "\n" for p in parts)
        else:
            yield from parts
    if rest:
        yield rest


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


# -- the rules that span rows ----------------------------------------------------------
class _Collector:
    """Turns valid rows into tasks: one task per instruction (grouped formats merge rows, in
    Self-Instruct JSONL a repeat is a problem); rows whose instruction is already in the pool
    are reported, never written. Holds the tasks as columns; their instances stay in memory
    (`pool=None`) or are staged in the pool's temporary table as they come."""

    def __init__(self, report: SeedFileReport, grouped: bool, in_pool: Callable[[list[str]], set[str]],
                 pool: Pool | None = None) -> None:
        self.report, self.grouped, self.in_pool, self.pool = report, grouped, in_pool, pool
        # instruction -> its task's number, or -1 when the pool holds it; per task its first line
        # and its instances so far in compact arrays (a gigabyte file can hold millions of tasks)
        self.seen: dict[str, int] = {}
        self.lines, self.sizes = array("q"), array("q")
        self.cols: dict[str, list] = {"source_id": [], "name": [], "instruction": [], "is_classification": []}
        self.kept: list[list[dict]] = []  # each task's instances, when not staging
        self.pending: list[tuple] = []
        self.instances = 0
        self.staged = None
        self.batch: dict[str, list] = {"task": [], "position": [], "input": [], "output": []}

    @property
    def count(self) -> int:
        return len(self.cols["instruction"])

    def add(self, row: tuple) -> None:
        self.pending.append(row)
        if len(self.pending) >= _BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        rows, self.pending = self.pending, []
        new = list({r[1] for r in rows if r[1] not in self.seen})
        taken = self.in_pool(new) if new else set()
        for row in rows:
            self._one(*row, taken)
        if self.pool is not None and len(self.batch["task"]) >= _STAGE_ROWS:
            self._stage()

    def finish(self) -> None:
        self._flush()
        if self.pool is not None:
            self._stage()

    def _stage(self) -> None:
        if self.batch["task"] or self.staged is None:
            self.staged = self.pool.seeds.stage_seed_instances(self.staged, self.batch)
            self.batch = {k: [] for k in self.batch}

    def _one(self, line, instruction, instances, is_clf, name, source_id, taken) -> None:
        number = self.seen.get(instruction)
        if number is None:
            if instruction in taken:
                self.seen[instruction] = -1
                self.report.add(SeedIssue(line, f"This instruction is already in the pool: {_short(instruction)}",
                                          IN_POOL))
                return
            number = self.seen[instruction] = self.count
            for key, value in (("source_id", source_id), ("name", name), ("instruction", instruction),
                               ("is_classification", bool(is_clf))):
                self.cols[key].append(value)
            self.lines.append(line)
            self.sizes.append(0)
            if self.pool is None:
                self.kept.append([])
        elif number < 0:
            self.report.add(SeedIssue(line, f"This instruction is already in the pool: {_short(instruction)}",
                                      IN_POOL))
            return
        elif not self.grouped:
            self.report.add(SeedIssue(line, f"The same instruction is already on line {self.lines[number]}: "
                                            f"{_short(instruction)}"))
            return
        elif is_clf:
            self.cols["is_classification"][number] = True
        self.instances += len(instances)
        if self.pool is None:
            self.kept[number].extend({"input": i, "output": o} for i, o in instances)
            return
        b = self.batch
        position = self.sizes[number]
        for inp, out in instances:
            b["task"].append(number)
            b["position"].append(position)
            b["input"].append(inp)
            b["output"].append(out)
            position += 1
        self.sizes[number] = position

    def tasks(self) -> list[SeedTask]:
        c = self.cols
        return [SeedTask(instruction=c["instruction"][n], instances=self.kept[n] if self.kept else [],
                         is_classification=c["is_classification"][n], name=c["name"][n],
                         source_id=c["source_id"][n], line=self.lines[n]) for n in range(self.count)]

    def task_columns(self) -> dict[str, list]:
        c = self.cols
        return {"task": list(range(self.count)), "source_id": c["source_id"], "name": c["name"],
                "instruction": c["instruction"], "is_classification": c["is_classification"]}


def _read(data, filename: str | None, fmt: str | None, collector_for, progress: ProgressFn | None):
    """Read `data` through the format's row reader into the collector `collector_for(report,
    fmt)` builds. Returns (report, collector or None)."""
    try:
        stream, size, own_name, opened = _open(data)
    except OSError as exc:
        return SeedFileReport(fmt or "unknown", [], [SeedIssue(0, f"Cannot read {data}: {exc.strerror}.")]), None
    filename = filename or own_name
    try:
        if size is not None and size > MAX_SEED_FILE_BYTES:
            return SeedFileReport(fmt or "unknown", [], [_too_big(size)]), None
        chunks = _decoded(stream, size, progress)
        try:
            head = next(chunks, "")
        except _Fatal as exc:
            return SeedFileReport(fmt or "unknown", [], [exc.issue]), None
        fmt = fmt or detect_format(filename, head[:4096])
        if fmt not in FORMATS:
            raise ValueError(f"Unknown seed format {fmt!r}; use one of {', '.join(FORMATS)}.")
        report = SeedFileReport(fmt, [], [])
        collector = collector_for(report, fmt)
        rows = {"selfinstruct": _rows_selfinstruct, "alpaca": _rows_alpaca, "csv": _rows_csv}[fmt]

        def all_chunks():
            if head:
                yield head
            yield from chunks

        try:
            for row in rows(all_chunks(), report):
                collector.add(row)
        except _Fatal as exc:
            report.add(exc.issue)
        collector.finish()
        report.issues.sort(key=lambda i: i.line)
        if not collector.count and not report.issues:
            report.add(SeedIssue(0, "The file holds no seed tasks."))
        return report, collector
    finally:
        if opened:
            stream.close()


def read_seed_file(data: bytes | str | Path | IO[bytes], filename: str | None = None, *,
                   fmt: str | None = None, existing: Iterable[str] = (),
                   progress: ProgressFn | None = None) -> SeedFileReport:
    """Parse and validate a seed file without touching any pool; its tasks are in the report.

    `data` is the file's bytes, a path or a binary file object. `existing` holds instructions
    already in the pool; a row repeating one is reported."""
    existing = set(existing)

    def collector_for(report, fmt):
        return _Collector(report, fmt != "selfinstruct", lambda texts: existing.intersection(texts))

    report, collector = _read(data, filename, fmt, collector_for, progress)
    if collector is not None:
        report.tasks = collector.tasks()
    return report


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _nul(line: int, where: str) -> SeedIssue:
    return SeedIssue(line, f"{where} holds a NUL character (\\u0000), which a seed cannot hold; remove it.")


def _instruction_of(obj: dict, line: int, issues: SeedFileReport) -> str | None:
    if "instruction" not in obj:
        issues.add(SeedIssue(line, 'Missing "instruction".'))
        return None
    value = obj["instruction"]
    if not isinstance(value, str):
        issues.add(SeedIssue(line, f'"instruction" must be text, found {_type_name(value)}.'))
        return None
    if "\x00" in value:
        issues.add(_nul(line, '"instruction"'))
        return None
    value = value.strip()
    if not value:
        issues.add(SeedIssue(line, '"instruction" is empty.'))
        return None
    return value


def _bool_of(obj: dict, key: str, line: int, issues: SeedFileReport) -> bool | None:
    value = obj.get(key, False)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    issues.add(SeedIssue(line, f'"{key}" must be true or false, found {_type_name(value)} {value!r}.'))
    return None


def _text_field(obj: dict, key: str, line: int, issues: SeedFileReport, where: str,
                required: bool) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            issues.add(SeedIssue(line, f'{where} has no "{key}".'))
            return None
        return ""
    value = obj[key]
    if not isinstance(value, str):
        issues.add(SeedIssue(line, f'{where}: "{key}" must be text, found {_type_name(value)}.'))
        return None
    if "\x00" in value:
        issues.add(_nul(line, f'{where}: "{key}"'))
        return None
    return value.strip()


def _label_of(obj: dict, key: str, line: int, issues: SeedFileReport) -> tuple[bool, str | None]:
    value = obj.get(key)
    if value is None:
        return True, None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        issues.add(SeedIssue(line, f'"{key}" must be text, found {_type_name(value)}.'))
        return False, None
    value = str(value)
    if "\x00" in value:
        issues.add(_nul(line, f'"{key}"'))
        return False, None
    return True, value


# -- Self-Instruct JSONL --------------------------------------------------------
def _rows_selfinstruct(chunks: Iterable[str], report: SeedFileReport) -> Iterator[tuple]:
    loads = json.loads
    for line_no, raw in enumerate(_lines(chunks, keepends=False), start=1):
        if not raw.strip():
            continue
        report.rows += 1
        try:
            obj = loads(raw)
        except json.JSONDecodeError as exc:
            report.add(SeedIssue(line_no, f"Not valid JSON ({exc.msg} at column {exc.colno})."))
            continue
        except RecursionError:
            report.add(SeedIssue(line_no, _NESTED))
            continue
        if not isinstance(obj, dict):
            report.add(SeedIssue(line_no, f"Expected a JSON object, found {_type_name(obj)}."))
            continue
        before = report.problem_count
        instruction = _instruction_of(obj, line_no, report)
        is_clf = _bool_of(obj, "is_classification", line_no, report)
        instances = _instances_of(obj, line_no, report)
        id_ok, source_id = _label_of(obj, "id", line_no, report)
        name_ok, name = _label_of(obj, "name", line_no, report)
        if report.problem_count > before:
            continue
        yield line_no, instruction, instances, is_clf, name, source_id


def _instances_of(obj: dict, line: int, issues: SeedFileReport) -> list[tuple[str, str]]:
    raw = obj.get("instances", [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        issues.add(SeedIssue(line, f'"instances" must be a list, found {_type_name(raw)}.'))
        return []
    instances = []
    for n, inst in enumerate(raw, start=1):
        where = f"instance {n}"
        if not isinstance(inst, dict):
            issues.add(SeedIssue(line, f"{where} must be an object with input and output, "
                                       f"found {_type_name(inst)}."))
            continue
        inp = _text_field(inst, "input", line, issues, where, required=False)
        out = _text_field(inst, "output", line, issues, where, required=True)
        if inp is not None and out is not None:
            instances.append((inp, out))
    return instances


# -- Alpaca JSON (one list, read element by element) -----------------------------------
_SKIP = re.compile(r"[ \t\r\n,]*")
_WS = re.compile(r"[ \t\r\n]*")
_FIRST_CHAR = {"{": "an object", '"': "text", "t": "true/false", "f": "true/false", "n": "null"}


def _rows_alpaca(chunks: Iterable[str], report: SeedFileReport) -> Iterator[tuple]:
    it = iter(chunks)
    buf, pos, line, eof = "", 0, 1, False
    decode = json.JSONDecoder().raw_decode

    def fill() -> bool:
        nonlocal buf, pos, eof
        nxt = next(it, None)
        if nxt is None:
            eof = True
            return False
        buf, pos = buf[pos:] + nxt, 0
        return True

    def skip(pattern) -> None:
        nonlocal pos, line
        while True:
            end = pattern.match(buf, pos).end()
            line += buf.count("\n", pos, end)
            pos = end
            if pos < len(buf) or eof or not fill():
                return

    skip(_WS)
    if pos >= len(buf):
        return
    if buf[pos] != "[":
        head = buf[pos]
        found = _FIRST_CHAR.get(head) or ("a number" if head in "-0123456789" else None)
        if found is None:
            raise _Fatal(SeedIssue(line, "Not valid JSON (Expecting value)."))
        raise _Fatal(SeedIssue(line, "Expected a JSON list of "
                                     '{"instruction", "input", "output"} objects, '
                                     f"found {found}."))
    pos += 1
    while True:
        skip(_SKIP)
        if pos >= len(buf):
            raise _Fatal(SeedIssue(line, "The JSON list is not closed with ']'."))
        if buf[pos] == "]":
            return
        start_line = line
        while True:
            try:
                obj, end = decode(buf, pos)
                break
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated") or exc.pos >= len(buf) - 16
                if cut and not eof and len(buf) - pos < MAX_ROW_CHARS and fill():
                    continue
                if cut and not eof:
                    raise _Fatal(SeedIssue(start_line, f"This row is longer than {MAX_ROW_CHARS >> 20} MB "
                                                       "or never ends (an unclosed quote?); reading stopped here."))
                where = start_line + buf.count("\n", pos, exc.pos)
                msg = "a text value is not closed with a quote" if exc.msg.startswith("Unterminated") else exc.msg
                raise _Fatal(SeedIssue(where, f"Not valid JSON ({msg}); reading stopped here.")) from None
            except RecursionError:
                raise _Fatal(SeedIssue(start_line, _NESTED + " Reading stopped here.")) from None
        line += buf.count("\n", pos, end)
        pos = end
        report.rows += 1
        if not isinstance(obj, dict):
            report.add(SeedIssue(start_line, f"Expected an object with instruction, input and output, "
                                             f"found {_type_name(obj)}."))
            continue
        before = report.problem_count
        instruction = _instruction_of(obj, start_line, report)
        inp = _text_field(obj, "input", start_line, report, "This row", required=False)
        out = _text_field(obj, "output", start_line, report, "This row", required=True)
        is_clf = _bool_of(obj, "is_classification", start_line, report)
        if report.problem_count == before:
            yield start_line, instruction, [(inp, out)], is_clf, None, None


# -- CSV -------------------------------------------------------------------------
def _rows_csv(chunks: Iterable[str], report: SeedFileReport) -> Iterator[tuple]:
    reader = csv.reader(_lines(chunks, keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise _Fatal(SeedIssue(0, "The CSV file is empty.")) from None
    except csv.Error as exc:
        raise _Fatal(SeedIssue(1, f"Not a readable CSV header ({exc}).")) from None
    columns = [h.strip().lower() for h in header]
    if "instruction" not in columns:
        raise _Fatal(SeedIssue(1, "The CSV header must name an 'instruction' column "
                                  f"(found: {', '.join(columns) or 'nothing'})."))
    width = len(columns)
    at = {name: columns.index(name) for name in ("instruction", "input", "output", "is_classification")
          if name in columns}
    flags = _TRUE | _FALSE
    while True:
        start_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Fatal(SeedIssue(start_line, f"Not readable as CSV ({exc}); reading stopped here.")) from None
        if not any(v.strip() for v in values):
            continue
        report.rows += 1
        if len(values) != width:
            report.add(SeedIssue(start_line, f"Expected {width} fields like the header, found {len(values)}."))
            continue
        nul = next((name for name, i in at.items() if "\x00" in values[i]), None)
        if nul is not None:
            report.add(_nul(start_line, f'"{nul}"'))
            continue
        instruction = values[at["instruction"]].strip()
        if not instruction:
            report.add(SeedIssue(start_line, '"instruction" is empty.'))
            continue
        flag = values[at["is_classification"]].strip().lower() if "is_classification" in at else ""
        if flag not in flags:
            report.add(SeedIssue(start_line, f"is_classification must be true or false, found {flag!r}."))
            continue
        inp = values[at["input"]].strip() if "input" in at else ""
        out = values[at["output"]].strip() if "output" in at else ""
        yield start_line, instruction, [(inp, out)], flag in _TRUE, None, None


# -- import -------------------------------------------------------------------
def import_seeds(pool: Pool, data: bytes | str | Path | IO[bytes], filename: str | None = None, *,
                 fmt: str | None = None, valid_only: bool = False, origin: str | None = None,
                 actor: str = "user", progress: ProgressFn | None = None) -> ImportResult:
    """Validate then write, reading `data` (bytes, a path or a binary file object) as a stream.
    Raises SeedImportError (nothing written) when the file has problems, unless `valid_only`,
    in which case the valid tasks are written. A file whose only problem is that its rows are
    already in the pool (imported before) writes nothing and raises nothing: the result says
    so. `progress(bytes_read, total_bytes)` is called as the file is read."""
    holder: dict = {}

    def collector_for(report, fmt):
        holder["c"] = _Collector(report, fmt != "selfinstruct", pool.seeds.existing_instructions, pool)
        return holder["c"]

    source = filename or (str(data) if isinstance(data, (str, Path)) else getattr(data, "name", None) or "upload")
    try:
        report, collector = _read(data, filename, fmt, collector_for, progress)
        imported = collector.count if collector is not None else 0
        if report.issues and not valid_only and not (report.only_in_pool and not imported):
            raise SeedImportError(report, source)
        if imported:
            collector.staged.tasks = collector.task_columns()
            actions.import_seeds(pool, collector.staged, origin=origin or Path(source).name, actor=actor)
        instances = collector.instances if collector else 0
    finally:
        if "c" in holder:
            pool.seeds.drop_staged_seeds(holder["c"].staged)
    return ImportResult(imported=imported, instances=instances, skipped_lines=report.bad_lines, report=report)


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
        taken = pool.seeds.existing_instructions(t.instruction for t in new_tasks)
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
