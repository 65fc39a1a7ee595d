"""Writing an export: the data file in any format, streamed batch by batch
(`write_export`), a preview of its first records, and a whole export with its
dataset card, to a folder or one zip archive (`export_dataset`,
`export_archive_bytes`).

Rows come from DuckDB in Arrow batches and each batch is written before the
next is read, so an export never holds the whole dataset in Python memory.
Parquet is written by `pyarrow.parquet.ParquetWriter` (one row group per
batch) and CSV by the `csv` module; the JSON formats are written line by line
with `json.dumps` (the Alpaca JSON list too: its brackets and commas are
written around the streamed items, as `json.dump` would need the whole list)."""
from __future__ import annotations

import csv
import io
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from ..store import Pool
from ..store.explore import EXPORT_COLUMNS
from .card import CARD_MARKER, build_card
from .formats import (FORMAT_INFO, FORMATS, ExportFilters, ExportOptions, Recorder, clean_row, csv_values,
                      dumps, rows_of)

__all__ = ["ExportResult", "write_export", "preview_records", "iter_records", "export_dataset",
           "export_archive_bytes", "download_name"]


# ---------------------------------------------------------------------------- results
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


# ---------------------------------------------------------------------------- previews
def preview_records(pool: Pool, fmt: str, filters: ExportFilters, options: ExportOptions | None = None,
                    limit: int = 3) -> list[str]:
    """The first `limit` records of an export as the file would hold them (JSON
    text for the JSON formats, a CSV line otherwise)."""
    options = options or ExportOptions()
    filters = filters.for_format(fmt)
    recorder = Recorder(fmt, options)
    out: list[str] = []
    if fmt == "selfinstruct":
        # enough rows for `limit` tasks: a task has at most a handful of instances
        frame = pool.export_preview(filters, limit=max(50, limit * 20))
        for row in frame.to_dict("records"):
            row = clean_row(row)
            done = recorder.add_to_task(row)
            if done is not None:
                out.append(dumps(done))
                if len(out) == limit:
                    return out
        last = recorder.finish_task()
        if last is not None and len(out) < limit:
            out.append(dumps(last))
        return out
    frame = pool.export_preview(filters, limit=limit)
    rows = [clean_row(r) for r in frame.to_dict("records")]
    if fmt in ("csv", "parquet"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(csv_values(row))
        return buffer.getvalue().splitlines()[: limit + 1]
    return [dumps(recorder.record(row)) for row in rows]


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
    recorder = Recorder(fmt, options)
    records = 0
    if fmt == "csv":
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for batch in reader:
            rows = rows_of(batch)
            writer.writerows(csv_values(row) for row in rows)
            records += len(rows)
        return records
    if fmt == "alpaca":
        text.write("[")
        for batch in reader:
            lines = [dumps(recorder.record(row)) for row in rows_of(batch)]
            if lines:
                text.write(("\n" if records == 0 else ",\n") + ",\n".join(lines))
                records += len(lines)
        text.write("\n]\n" if records else "]\n")
        return records
    if fmt == "selfinstruct":
        for batch in reader:
            lines = []
            for row in rows_of(batch):
                done = recorder.add_to_task(row)
                if done is not None:
                    lines.append(dumps(done))
            if lines:
                text.write("\n".join(lines) + "\n")
                records += len(lines)
        last = recorder.finish_task()
        if last is not None:
            text.write(dumps(last) + "\n")
            records += 1
        return records
    for batch in reader:  # chat, prompt-completion: one line per instance
        lines = [dumps(recorder.record(row)) for row in rows_of(batch)]
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
    recorder = Recorder(fmt, options or ExportOptions())
    for batch in pool.export_reader(filters):
        for row in rows_of(batch):
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
