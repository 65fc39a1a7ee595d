"""Writing an export: the data file in any format, streamed batch by batch
(`write_export`), a preview of its first records, and a whole export with its
dataset card, to a folder or one zip archive (`export_dataset`,
`export_archive_bytes`), and the name of a download (`download_name`).

Beside a data file `<stem>.<ext>` the card is `<stem>_README.md` and its charts are in
`<stem>_charts/` (`card_paths`), so exports with different names share a folder without
touching each other's files; a zip archive holds README.md (the name Hugging Face reads)
and charts/.

Rows come from DuckDB in Arrow batches and each batch is written before the
next is read, so an export never holds the whole dataset in Python memory.
Parquet is written by `pyarrow.parquet.ParquetWriter` (one row group per
batch) and CSV by the `csv` module; the JSON formats are written line by line
with `json.dumps` (the Alpaca JSON list too: its brackets and commas are
written around the streamed items, as `json.dump` would need the whole list)."""
from __future__ import annotations

import csv
import io
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from .. import render
from ..model import NUL_REPLACEMENT
from ..store import Pool
from ..store.explore import EXPORT_COLUMNS
from .card import CHART_FILES, build_card, card_data_file
from .formats import (FORMAT_INFO, FORMATS, ExportFilters, ExportOptions, Recorder, clean_row, csv_values,
                      dumps, rows_of)
from .presets import config_files, prepare_config_files, resolve_format, write_config_files

__all__ = ["ExportResult", "write_export", "preview_records", "preview_table", "iter_records",
           "export_dataset", "export_archive_bytes", "download_name", "card_paths", "ExportNameTaken"]


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
    config_paths: list[Path] = field(default_factory=list)   # a trainer preset's files beside the data


def _csv_writer(text: IO[str]):
    """Every cell in double quotes (OWASP's advice for a CSV a spreadsheet may open; it
    also keeps a lone carriage return inside its cell, which minimal quoting with "\\n"
    line ends would not), rows ending in "\\n"."""
    return csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL)


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
        frame = pool.explore.export_preview(filters, limit=max(50, limit * 20), task_labels=True)
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
    frame = pool.explore.export_preview(filters, limit=limit)
    rows = [clean_row(r) for r in frame.to_dict("records")]
    if fmt in ("csv", "parquet"):
        buffer = io.StringIO()
        writer = _csv_writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:   # the Parquet file holds the text as it is; the CSV file, made safe
            writer.writerow(csv_values(row, safe=fmt == "csv"))
        return buffer.getvalue().splitlines()[: limit + 1]
    return [dumps(recorder.record(row)) for row in rows]


def preview_table(pool: Pool, filters: ExportFilters, limit: int = 20):
    """The first `limit` exported rows for a table on screen: a seed's run and round,
    which it has none of, and a missing instance's fields show "–" (st.dataframe would
    print "None"); text stays as it is."""
    return render.table(pool.explore.export_preview(filters, limit))


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
    counts = pool.explore.export_counts(filters)
    path = Path(out) if isinstance(out, (str, Path)) else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    reader = pool.explore.export_reader(filters, batch_size=options.batch_size, task_labels=fmt == "selfinstruct")
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
        writer = _csv_writer(text)
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
                writer.write_batch(_nul_free_batch(batch))
                records += batch.num_rows
    return records


def _nul_free_batch(batch):
    """The batch's text columns with NUL as U+FFFD (model.without_nul, in Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [pc.replace_substring(col, "\x00", NUL_REPLACEMENT) if pa.types.is_string(col.type)
               or pa.types.is_large_string(col.type) else col for col in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


# ---------------------------------------------------------------------------- whole exports
class ExportNameTaken(ValueError):
    """The card's name beside a data file belongs to a file that is not that export's card."""


def _card_of(path: Path, data_name: str) -> bool:
    """Is `path` free for the card of `data_name`: absent, or that export's own card?"""
    if not path.exists():
        return True
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(4000)
    except OSError:
        return False
    return card_data_file(head) == data_name


def card_paths(data_path: Path) -> tuple[Path, Path]:
    """Where the card and the charts of an export to `data_path` go:
    `<stem>_README.md` and `<stem>_charts/` beside it (alpaca.json ->
    alpaca_README.md, alpaca_charts/). When that card belongs to another data file
    with the same stem (data.csv beside data.json), `<stem>_<ext>_README.md` and
    `<stem>_<ext>_charts/`. A file there that is not one of our cards is never
    overwritten: `ExportNameTaken`."""
    data_path = Path(data_path)
    stem, ext = data_path.stem, data_path.suffix.lstrip(".")
    bases = [stem] + ([f"{stem}_{ext}"] if ext else [])
    for base in bases:
        card = data_path.with_name(f"{base}_README.md")
        if _card_of(card, data_path.name):
            return card, data_path.with_name(f"{base}_charts")
    raise ExportNameTaken(
        f"{data_path.with_name(bases[-1] + '_README.md')} is already there and is not the dataset card "
        f"of {data_path.name}; it is left as it is. Export under another name, or move that file.")


def export_dataset(pool: Pool, fmt: str | None, out: str | Path, filters: ExportFilters | None = None,
                   options: ExportOptions | None = None, *, card: bool = True,
                   title: str | None = None, preset: str | None = None, license: str | None = None,
                   language: str | tuple[str, ...] | None = None) -> ExportResult:
    """Write an export to `out`. With a path ending in `.zip`: one archive holding
    the data file (named after the archive), README.md, charts/ and a trainer
    preset's files. Otherwise the data file at `out`, and with `card`, the card and
    its charts beside it, named after it (`card_paths`: `<stem>_README.md`,
    `<stem>_charts/`), and the preset's files beside it (`presets.py`; a
    dataset_info.json there is merged into). Another export's files in the same
    folder are left alone. `fmt` may be None with a `preset` (its default format);
    `license` and `language` go into the card's Hugging Face metadata."""
    fmt = resolve_format(preset, fmt)
    filters = filters or ExportFilters()
    options = options or ExportOptions()
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    card_options = {"title": title, "preset": preset, "license": license, "language": language}
    if out.suffix.lower() == ".zip":
        data_name = out.stem + FORMAT_INFO[fmt].extension
        configs = config_files(preset, data_name, fmt, archive=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".selfinstruct-export-") as tmp:
            data_path = Path(tmp) / data_name
            built = build_card(pool, fmt, filters, options, data_file=data_name, charts_dir="charts",
                               archive=True, **card_options) if card else None
            result = write_export(pool, fmt, data_path, filters, options)
            files = [data_name]
            partial = out.with_name(out.name + ".part")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                zf.write(data_path, data_name)
                for config in configs:
                    zf.writestr(config.name, config.text)
                    files.append(config.name)
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
    card_path, folder = card_paths(out) if card else (None, None)   # refused before anything is written
    configs = prepare_config_files(preset, out, fmt)                   # so are a preset's files
    built = build_card(pool, fmt, filters, options, data_file=out.name, charts_dir=folder.name,
                       card_file=card_path.name, **card_options) if card else None
    result = write_export(pool, fmt, out, filters, options)
    result.config_paths = write_config_files(configs)
    if card:
        card_path.write_text(built.markdown, encoding="utf-8")
        result.card_path = card_path
        if folder.is_dir():   # this export's charts folder: no chart of an earlier export left behind
            for name in CHART_FILES:
                if name not in built.charts:
                    (folder / name).unlink(missing_ok=True)
        if built.charts:
            folder.mkdir(exist_ok=True)
            for name, svg in built.charts.items():
                (folder / name).write_text(svg, encoding="utf-8")
                result.chart_paths.append(folder / name)
    result.seconds = time.perf_counter() - started
    return result


def zipped(fmt: str, *, card: bool, preset: str | None = None) -> bool:
    """Does a download come as a zip: with the card, or with a preset's config files."""
    return card or bool(config_files(preset, "data" + FORMAT_INFO[fmt].extension, fmt, archive=True))


def export_archive_bytes(pool: Pool, fmt: str, filters: ExportFilters | None = None,
                         options: ExportOptions | None = None, *, name: str = "selfinstruct-data",
                         card: bool = True, title: str | None = None, preset: str | None = None,
                         license: str | None = None, language: str | tuple[str, ...] | None = None) -> bytes:
    """A whole export as bytes (for a browser download): a zip with the data file,
    README.md and charts/ when `card`, and a preset's files; the data file alone when
    there is nothing else (`zipped`). Built on disk in a temporary folder; only the
    finished file is read into memory."""
    with tempfile.TemporaryDirectory(prefix="selfinstruct-export-") as tmp:
        if zipped(fmt, card=card, preset=preset):
            path = Path(tmp) / f"{name}.zip"
        else:
            path = Path(tmp) / f"{name}{FORMAT_INFO[fmt].extension}"
        export_dataset(pool, fmt, path, filters, options, card=card, title=title, preset=preset,
                       license=license, language=language)
        return path.read_bytes()


def download_name(fmt: str, *, card: bool, pool_name: str | None = None,
                  when: datetime | None = None, preset: str | None = None) -> str:
    """The name of a browser download: `selfinstruct-[<pool>-][<preset>-]<format>-<YYYYMMDD-HHMM>`
    (UTC), `.zip` with the card or a preset's files (`zipped`), else the format's
    extension; e.g. `selfinstruct-alpaca-20261201-0315.zip`. `pool_name` (the pool file's
    stem) is left out when it is the default "pool"."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    parts = ["selfinstruct"]
    pool = re.sub(r"[^A-Za-z0-9_-]+", "-", pool_name or "").strip("-_")[:40]
    if pool and pool.lower() not in ("pool", "selfinstruct"):
        parts.append(pool)
    if preset:
        parts.append(preset)
    parts += [fmt, when.strftime("%Y%m%d-%H%M")]
    return "-".join(parts) + (".zip" if zipped(fmt, card=card, preset=preset) else FORMAT_INFO[fmt].extension)


def iter_records(pool: Pool, fmt: str, filters: ExportFilters | None = None,
                 options: ExportOptions | None = None) -> Iterator[dict]:
    """The records of a JSON format one by one (for tests and scripts)."""
    if fmt in ("parquet", "csv"):
        raise ValueError("iter_records gives JSON records; read Parquet/CSV files with pandas.")
    filters = (filters or ExportFilters()).for_format(fmt)
    recorder = Recorder(fmt, options or ExportOptions())
    for batch in pool.explore.export_reader(filters, task_labels=fmt == "selfinstruct"):
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
