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
``parquet``, ``csv``  one row per instance with `EXPORT_COLUMNS`; the CSV file is
                    made safe for spreadsheets (`CSV_SAFETY_NOTE`: a cell that
                    would run as a formula gets a leading ', NUL becomes U+FFFD).
==================  ==========================================================

Which rows: `ExportFilters`, turned into SQL by the pool (`Pool.export_counts`,
`Pool.export_preview`, `Pool.export_reader` share one query builder), so the
counts a page shows are the rows a file gets.

The package in three parts:

- `formats`: the formats, the row filters, the prompt templates, the options,
  and how a row becomes one format's record;
- `writers`: streaming writers (rows come from DuckDB in Arrow batches, each
  written before the next is read), previews, whole exports and zip archives;
- `card`: the dataset card, Markdown filled from ``templates/card.md`` (the
  Hugging Face metadata header, counts, the runs' generation settings, the
  filters, the quality study's results), with SVG charts rendered from
  `selfinstruct.charts`;
- `presets`: hand-off to trainers (``trl``, ``axolotl``, ``llama-factory``): each
  picks a format and adds the trainer's config beside the data (an axolotl YAML
  snippet, a LLaMA-Factory ``dataset_info.json`` entry) and a card section.

`export_dataset` writes the data file and, beside it, the card and its charts,
named after it (``alpaca.json``: ``alpaca_README.md``, ``alpaca_charts/``), and a
preset's files; with a ``.zip`` path everything goes into one zip archive instead
(README.md, charts/, the preset's files).
`download_name` names a browser download after the format and the time.
"""
from ..store.explore import EXPORT_COLUMNS
from .card import (CARD_MARKER, PAPER_LENGTHS, DatasetCard, build_card, check_languages, check_license,
                   hub_metadata, size_category)
from .formats import (CSV_SAFETY_NOTE, FORMAT_INFO, FORMATS, PROMPT_TEMPLATES, ExportFilters, ExportOptions,
                      FormatInfo, PromptTemplate, csv_cell, csv_text, format_name, parse_run_ids, render_prompt)
from .presets import (PRESET_NAMES, PRESETS, ConfigFile, Preset, PresetError, config_files, dataset_key,
                      resolve_format, to_yaml)
from .writers import (ExportNameTaken, ExportResult, card_paths, download_name, export_archive_bytes,
                      export_dataset, iter_records, preview_records, preview_table, write_export, zipped)

__all__ = [
    "FORMATS", "FORMAT_INFO", "FormatInfo", "format_name", "ExportFilters", "ExportOptions", "ExportResult", "PromptTemplate",
    "PROMPT_TEMPLATES", "render_prompt", "write_export", "preview_records", "build_card",
    "DatasetCard", "export_dataset", "export_archive_bytes", "download_name", "iter_records", "parse_run_ids",
    "EXPORT_COLUMNS", "CARD_MARKER", "PAPER_LENGTHS", "CSV_SAFETY_NOTE", "csv_cell", "csv_text", "card_paths",
    "ExportNameTaken", "preview_table", "PRESETS", "PRESET_NAMES", "Preset", "PresetError", "ConfigFile",
    "config_files", "resolve_format", "dataset_key", "to_yaml", "hub_metadata", "size_category",
    "check_license", "check_languages", "zipped",
]
