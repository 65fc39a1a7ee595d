"""The dataset card of an export: a README.md filled from the Markdown template
`templates/card.md` (counts, how each run generated its tasks, the filters, the
quality study's results, the model judge's figures when one judged the items) and its charts, drawn by the same definitions the pages
show (`selfinstruct.charts`) and rendered to SVG files."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any

from .. import __version__, calibration, charts
from .. import topics
from ..explore import HEURISTIC_NOTE, NONE, rouge_histogram, rouge_vs_seeds, verb_noun_counts
from ..model import MEASURE_LABELS, PAPER_RATES, ROUGE_THRESHOLD
from ..store import Pool
from .formats import CSV_SAFETY_NOTE, FORMAT_INFO, ExportFilters, ExportOptions
from .presets import card_section, to_yaml

__all__ = ["DatasetCard", "build_card", "CARD_MARKER", "PAPER_LENGTHS", "CHART_FILES", "card_data_file",
           "hub_metadata", "size_category", "check_license", "check_languages", "DEFAULT_LICENSE",
           "DEFAULT_LANGUAGE", "SIZE_CATEGORIES"]

CARD_MARKER = "<!-- selfinstruct dataset card -->"
# The card's second line names the data file it describes, so that an export can tell its own
# card from another export's (writers.card_paths).
_DATA_FILE_LINE = re.compile(r"^<!-- data file: (\"(?:[^\"\\]|\\.)*\") -->$", re.MULTILINE)
# The Hugging Face Hub's size buckets, by upper bound (a count equal to a bound is in the next one).
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                   (1_000_000_000, "100M<n<1B"), (10_000_000_000, "1B<n<10B"),
                   (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"))
DEFAULT_LICENSE = "other"       # the Hub's word for "not one of the listed licenses": a placeholder
DEFAULT_LANGUAGE = ("en",)
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PAPER_LENGTHS = {"instruction": 15.9, "input": 12.7, "output": 18.9}
# chart file -> its alt text in the card (the files' names are part of the export's layout)
CHART_FILES = {
    "lengths.svg": "Word counts of instructions, inputs and outputs",
    "topics.svg": "The pool's topics on a map (topics.card_part)",
    "verbs.svg": "Most common leading verbs and their first nouns",
    "rouge_vs_seeds.svg": "ROUGE-L of each generated instruction against its most similar seed",
}


@lru_cache(maxsize=1)
def card_template() -> Template:
    """templates/card.md (package data) as a `string.Template`."""
    text = resources.files(__package__).joinpath("templates", "card.md").read_text(encoding="utf-8")
    return Template(text)


@dataclass
class DatasetCard:
    markdown: str
    charts: dict[str, str]      # file name -> SVG text
    stats: dict


def card_data_file(text: str) -> str | None:
    """The data file a card of ours describes (from its first lines), or None when
    `text` is not a selfinstruct card or does not say."""
    head = text[:4000]
    if CARD_MARKER not in head:
        return None
    found = _DATA_FILE_LINE.search(head)
    if found is None:
        return None
    try:
        name = json.loads(found.group(1))
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def _data_file_line(data_file: str) -> str:
    # JSON-quoted, with "--" written "-\\u002d" so that no name can end the HTML comment
    quoted = json.dumps(data_file).replace("--", "-\\u002d")
    return f"<!-- data file: {quoted} -->"


def check_license(value: str | None) -> str:
    """A license as the Hub's metadata writes it (an id such as apache-2.0, cc-by-4.0, mit;
    "other" when none is chosen). Raises ValueError with a plain sentence."""
    text = (value or "").strip().lower() or DEFAULT_LICENSE
    if not _LICENSE_ID.match(text):
        raise ValueError(f"{value!r} is not a license id as the Hugging Face Hub writes them "
                         "(lower case, e.g. apache-2.0, cc-by-4.0, mit, or other).")
    return text


def check_languages(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Language codes (ISO 639, e.g. en, fr; comma-separated in one string), "en" when none."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    codes = tuple(p.strip() for p in parts if p and p.strip()) or DEFAULT_LANGUAGE
    for code in codes:
        if not _LANGUAGE_CODE.match(code):
            raise ValueError(f"{code!r} is not a language code (ISO 639, lower case, e.g. en or fr).")
    return codes


def size_category(n: int) -> str:
    """The Hub's size bucket for `n` records: 0 and 999 are n<1K, 1000 is 1K<n<10K."""
    for limit, label in SIZE_CATEGORIES:
        if n < limit:
            return label
    return "n>1T"


def hub_metadata(*, title: str, records: int, data_file: str, license: str = DEFAULT_LICENSE,
                 language: tuple[str, ...] = DEFAULT_LANGUAGE) -> dict:
    """The card's YAML header, which the Hugging Face Hub reads: license, language, task
    category, size bucket, tags, and one config whose train split is the data file."""
    return {
        "pretty_name": title,
        "license": license,
        "language": list(language),
        "task_categories": ["text-generation"],
        "tags": ["self-instruct", "instruction-tuning", "synthetic"],
        "size_categories": [size_category(records)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
    }


def _license_note(license: str, card_file: str, data_file: str) -> str:
    where = "" if card_file == "README.md" else (
        f" On the Hugging Face Hub, upload this card as README.md beside `{data_file}`; its YAML header "
        "(license, language, size, the data file) is what the Hub reads.")
    if license == DEFAULT_LICENSE:
        text = ("No license was chosen: the header says `license: other`. Choose one before sharing "
                "(export with `--license`, or the License field of the Export page, or edit the "
                "header), and check that it fits the terms of the model that wrote the generated "
                "text and of the seed tasks.")
    else:
        text = (f"Released under `{license}` (chosen at export). Check that it fits the terms of the "
                "model that wrote the generated text and of the seed tasks.")
    return text + where


def build_card(pool: Pool, fmt: str, filters: ExportFilters | None = None,
               options: ExportOptions | None = None, *, data_file: str = "data",
               charts_dir: str = "charts", card_file: str = "README.md", title: str | None = None,
               rouge_max_items: int = 20_000, preset: str | None = None, license: str | None = None,
               language: str | tuple[str, ...] | None = None, archive: bool = False) -> DatasetCard:
    """The dataset card of an export: the Hugging Face metadata header (`hub_metadata`),
    counts, how it was generated (each run's model, mode, sampling, thresholds, keywords,
    prompt versions and seed), the filters, the quality study's results, charts (SVG files
    under `charts_dir`), and with a trainer `preset` how to train with it. `data_file`,
    `charts_dir` and `card_file` are the names the card gives the files beside it;
    `archive`: they are inside one zip (the preset's files get their zip names)."""
    license = check_license(license)
    language = check_languages(language)
    filters = (filters or ExportFilters()).for_format(fmt)
    options = options or ExportOptions()
    info = FORMAT_INFO[fmt]
    counts = pool.explore.export_counts(filters)
    lengths = pool.explore.export_length_stats(filters)
    tasks = pool.explore.export_instructions(filters)
    generated = [text for source, text in tasks if source == "generated"]
    seeds_in_pool = pool.explore.seed_instruction_texts()
    verbs = verb_noun_counts([text for _, text in tasks], top_verbs=15, nouns_per_verb=3)
    rouge = rouge_vs_seeds(seeds_in_pool, generated, max_items=rouge_max_items)
    runs = [_run_summary(pool, run_id) for run_id in pool.explore.export_run_ids(filters)]
    studies = pool.explore.label_summary()
    judge_lines, judge_stats = _judge_section(pool, filters, counts, studies)
    topic_lines, topic_images = topics.card_part(pool, filters, charts_dir=charts_dir)

    images: dict[str, str] = {}
    if counts["tasks"]:
        images["lengths.svg"] = charts.to_svg(charts.length_histograms(lengths, show_means=True),
                                              title="Length in words")
    if len(verbs):
        none_total = int(verbs.loc[verbs["verb"] == NONE, "count"].sum())
        images["verbs.svg"] = charts.to_svg(
            charts.verb_bars(verbs), title="Most common leading verbs, with their most common first nouns",
            subtitle=f"{none_total:,} instruction(s) with no recognised leading verb." if none_total else None)
    if len(rouge.scores):
        threshold = next((r["config"]["rouge_threshold"] for r in runs
                          if isinstance(r["config"].get("rouge_threshold"), (int, float))), ROUGE_THRESHOLD)
        images["rouge_vs_seeds.svg"] = charts.to_svg(
            charts.rouge_vs_seeds(rouge_histogram(rouge.scores), threshold), width=560,
            title="ROUGE-L against the most similar seed instruction")

    images.update(topic_images)
    n_rows = counts["tasks"] + (counts["empty_tasks"] if filters.include_empty_tasks else 0) \
        if info.per_task else counts["instances"]
    title = title or "Self-Instruct dataset"
    run_lines = ["No generated task is in this export (seed tasks only)."] if not runs else [
        line for run in runs for line in _run_section(run)]
    metadata = hub_metadata(title=title, records=n_rows, data_file=data_file, license=license,
                            language=language)
    trainer = card_section(preset, data_file, fmt, archive=archive)
    markdown = card_template().substitute(
        metadata="---\n" + to_yaml(metadata) + "---\n",
        trainer="\n" + trainer if trainer else "",
        license_note=_license_note(license, card_file, data_file),
        marker=CARD_MARKER,
        data_file_marker=_data_file_line(data_file),
        card_file=card_file,
        title=title,
        version=__version__,
        exported=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        format_label=info.label,
        seed_tasks=f"{counts['seed_tasks']:,}", seed_instances=f"{counts['seed_instances']:,}",
        generated_tasks=f"{counts['generated_tasks']:,}",
        generated_instances=f"{counts['generated_instances']:,}",
        tasks=f"{counts['tasks']:,}", instances=f"{counts['instances']:,}",
        classification_tasks=f"{counts['classification_tasks']:,}", with_input=f"{counts['with_input']:,}",
        empty_tasks=(f"{counts['empty_tasks']:,} task(s) matched the filters but have no instance left; "
                     + ("they are written with an empty instance list." if filters.include_empty_tasks
                        else "they are not in the file.")) if counts["empty_tasks"] else
        "Every task matching the filters has at least one instance.",
        records=f"{n_rows:,}",
        mean_lengths=" | ".join(f"{lengths['means'].get(k, 0):.1f} ({PAPER_LENGTHS[k]})"
                                for k in ("instruction", "input", "output")),
        data_file=data_file,
        format_description=info.description,
        format_options="".join(f"  {line}\n" for line in options.describe(fmt)
                               + ([CSV_SAFETY_NOTE] if fmt == "csv" else [])),
        charts_note=f" Charts are in `{charts_dir}/`." if images else "",
        loading_hint=_loading_hint(fmt, data_file),
        runs="\n".join(run_lines),
        filters="\n".join(f"- {line}" for line in filters.describe()),
        quality="\n".join(_quality_section(studies)),
        judge="\n\n" + "\n".join(judge_lines) if judge_lines else "",
        charts=("\n" + "\n".join(_charts_section(images, charts_dir, rouge)) if images else "")
        + "\n".join(topic_lines),
    )
    stats = {"metadata": metadata, "counts": counts, "lengths": {"means": lengths["means"], "counts": lengths["counts"]},
             "records": n_rows, "runs": [r["id"] for r in runs], "studies": len(studies),
             "rouge_median": rouge.median if len(rouge.scores) else None, "judge": judge_stats}
    return DatasetCard(markdown, images, stats)


def _charts_section(images: dict[str, str], charts_dir: str, rouge) -> list[str]:
    md = ["", "## Charts", ""]
    if "lengths.svg" in images:
        md += [f"![{CHART_FILES['lengths.svg']}]({charts_dir}/lengths.svg)", ""]
    if "verbs.svg" in images:
        md += [f"![{CHART_FILES['verbs.svg']}]({charts_dir}/verbs.svg)", "", HEURISTIC_NOTE, ""]
    if "rouge_vs_seeds.svg" in images:
        sample = (f" (a random sample of {len(rouge.scores):,} of {rouge.total:,})"
                  if rouge.sampled else "")
        md += [f"![{CHART_FILES['rouge_vs_seeds.svg']}]({charts_dir}/rouge_vs_seeds.svg)", "",
               f"ROUGE-L F-measure between each generated instruction{sample} and the most "
               f"similar of the pool's {rouge.seeds:,} seed instructions: median "
               f"{rouge.median:.2f}, mean {rouge.mean:.2f}. Low values mean the generated tasks "
               "are not rewordings of the seeds.", ""]
    return md


def _loading_hint(fmt: str, data_file: str) -> str:
    if fmt == "parquet":
        code = f'import pandas as pd\nrows = pd.read_parquet("{data_file}")'
    elif fmt == "csv":
        code = (f'import pandas as pd\nrows = pd.read_csv("{data_file}", keep_default_na=False)\n'
                "# remove the ' put before cells a spreadsheet would run as formulas\n"
                'text = ["instruction", "input", "output"]\n'
                'rows[text] = rows[text].apply(lambda column: column.str.replace("^\'", "", regex=True))')
    elif fmt == "alpaca":
        code = f'import json\nrows = json.load(open("{data_file}", encoding="utf-8"))'
    else:
        code = (f'import json\nrows = [json.loads(line) for line in open("{data_file}", '
                'encoding="utf-8")]')
    return f"Load it with:\n\n```python\n{code}\n```"


def _run_summary(pool: Pool, run_id: int) -> dict:
    run = pool.runs.get(run_id) or {"id": run_id, "name": None, "status": "unknown", "config": {}}
    return {"id": run_id, "name": run.get("name"), "status": run.get("status"),
            "config": run.get("config") or {}, "usage": pool.runs.usage(run_id),
            "rounds_done": pool.runs.rounds_done(run_id)}


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
        ("Semantic gate", _semantic_gate_text(c)),
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


def _semantic_gate_text(c: dict) -> str:
    """The second novelty gate as the run used it (runs stored before it had none)."""
    if "cosine_threshold" not in c or not c.get("embedder"):
        return "none (no sentence vectors)"
    spec = c["embedder"]
    vectors = ("WordLlama's bundled 256-d static model" if spec.get("kind") == "bundled"
               else f"`{spec.get('model', '?')}` at the run's endpoint")
    if c.get("cosine_threshold") is None:
        return f"off (vectors stored: {vectors})"
    return (f"reject the same task reworded: cosine above {c['cosine_threshold']} with a pool instruction "
            f"({vectors}; reason semantic_dup)")


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
    p = PAPER_RATES
    out.append(f"| Self-Instruct paper (GPT-3) | 200/200 | expert | {p['valid_task']:.0%} | {p['input_ok']:.0%} | "
               f"{p['output_ok']:.0%} | {p['all_valid']:.0%} |")
    out.append("")
    out.append("The study samples the whole accepted pool, not only this export.")
    return out


# ---------------------------------------------------------------------------- the model judge
_DROP_WORDS = {"valid_task": "tasks it called not a valid task",
               "input_ok": "instances whose input it called not appropriate",
               "output_ok": "instances whose output it called not acceptable"}


def _card_judge_run(pool: Pool, filters: ExportFilters) -> dict | None:
    """The judge run the card reports: the filter's, else the newest judge run of the pool that
    judged some of the exported tasks."""
    if filters.judge_run_id is not None:
        return pool.judge.run(filters.judge_run_id)
    for run in pool.judge.runs():
        if run["scope"] == "pool" and pool.explore.export_judged(filters, run["id"])["tasks"]:
            return pool.judge.run(run["id"])
    return None


def _interval(value, low, high, spec: str = ".2f") -> str:
    if value is None:
        return "–"
    return f"{format(value, spec)} ({format(low, spec)} to {format(high, spec)})"


def _judge_calibration(pool: Pool, run: dict, studies: list[dict]) -> tuple[int | None, dict | None, dict | None, str]:
    """(study id, calibration per question, pool rates, why none) for the card: the newest labeled
    study the run's verdicts can be paired with (judge.pool_calibration / pool_rates), or for a
    study's judge run that study (judge.calibrate_run)."""
    from .. import judge

    if run["scope"] == "study":
        calibrated = judge.calibrate_run(pool, run["id"])
        why = "" if calibrated else f"nobody has labeled study {run['study_id']} yet"
        return run["study_id"], calibrated, None, why
    why = "no quality study has labels yet"
    for study in sorted(studies, key=lambda s: -s["study_id"]):
        try:
            calibrated = judge.pool_calibration(pool, run["id"], study["study_id"])
        except ValueError as exc:
            why = str(exc)
            continue
        try:
            rates = judge.pool_rates(pool, run["id"], study["study_id"])
        except ValueError as exc:      # too few items on one side
            rates, why = None, str(exc)
        return study["study_id"], calibrated, rates, why
    return None, None, None, why


def _judge_section(pool: Pool, filters: ExportFilters, counts: dict, studies: list[dict]) -> tuple[list[str], dict | None]:
    """The card's "Model judge" section (markdown lines) and its figures, or ([], None) when no
    judge run filters or judged the exported items."""
    run = _card_judge_run(pool, filters)
    if run is None:
        return [], None
    config = run["config"]
    progress = pool.judge.progress(run["id"])
    versions = sorted({v["prompt_version"] for v in pool.judge.verdicts(run["id"]) if v["prompt_version"]})
    judged = pool.explore.export_judged(filters, run["id"])
    unfiltered = pool.explore.export_counts(dataclasses.replace(filters, judge_exclude=()))
    dropped = {"tasks": unfiltered["generated_tasks"] - counts["generated_tasks"],
               "instances": unfiltered["generated_instances"] - counts["generated_instances"]}
    scope = (f"study {run['study_id']}'s items" if run["scope"] == "study" else "the pool's accepted tasks, "
             "one kept instance each")
    if filters.judge_exclude:
        filter_text = (f"Leaves out {'; '.join(_DROP_WORDS[q] for q in filters.judge_exclude)}: "
                       f"{dropped['tasks']:,} task(s) and {dropped['instances']:,} instance(s) fewer than without "
                       "this filter.")
    else:
        filter_text = "Not used to filter this export (its verdicts are reported only)."
    md = ["## Model judge", "",
          f"A language model answered the quality study's three questions for {scope} (judge run {run['id']}). "
          "Its verdicts are kept apart from people's labels: no figure in the quality study above counts them.", "",
          "| | |", "|---|---|",
          f"| Judge | `{_md_cell(config.get('model', '?'))}` via {_md_cell(config.get('backend', '?'))}, "
          f"{_md_cell(config.get('mode', '?'))} mode, run status {_md_cell(run['status'])} |",
          f"| Prompt | {_md_cell(', '.join(versions) or ', '.join((config.get('prompt_versions') or {}).values()))} "
          f"(parser {_md_cell(config.get('parser_version', '?'))}) |",
          f"| Items judged | {progress['parsed']:,} readable verdict(s) of {progress['total']:,} item(s) "
          f"({progress['unparseable']:,} unreadable, {progress['pending']:,} not answered yet) |",
          f"| In this export | {judged['tasks']:,} of {counts['generated_tasks']:,} generated task(s) and "
          f"{judged['instances']:,} of {counts['generated_instances']:,} instance(s) have a verdict |",
          f"| Filter | {filter_text} |", ""]
    study_id, calibrated, rates, why = _judge_calibration(pool, run, studies)
    if calibrated:
        md += [f"Against people (quality study {study_id}; people's answer is the majority of an item's labels; "
               "items where people are split or unsure, or the judge gave no verdict, are left out and counted). "
               "Cohen's kappa with its 95% interval, and how well the judge finds what people call \"no\": "
               "precision (of the items it called \"no\", the share people call \"no\") and recall (of the items "
               "people call \"no\", the share it called \"no\"), with 95% Wilson intervals:", "",
               "| Question | Compared | Left out | Kappa | Precision of \"no\" | Recall of \"no\" |",
               "|---|---:|---:|---:|---:|---:|"]
        for q, cal in calibrated.items():
            k, p, r = cal.kappa, cal.precision, cal.recall
            md.append(f"| {MEASURE_LABELS[q]} | {cal.items} | {cal.left_out_total} | "
                      f"{_interval(k.value, k.low, k.high) if k.value is not None else 'undefined'} | "
                      f"{_interval(p.estimate, p.low, p.high, '.0%')} ({p.hits}/{p.n}) | "
                      f"{_interval(r.estimate, r.low, r.high, '.0%')} ({r.hits}/{r.n}) |")
        md.append("")
    else:
        md += [f"No calibration against people: {why}", ""]
    if rates:
        first = next(iter(rates.values()))
        md += [f"Pool-wide share of \"yes\", with 95% intervals: the judge's verdicts on {first.n_judge:,} items "
               f"nobody labeled and the {first.n_human:,} labeled items together ({first.unreadable:,} item(s) "
               "without a readable verdict form a cell of their own, not dropped), beside the labeled items alone "
               "and the paper's figures. The study samples the judged pool, not only this export. "
               + calibration.RATES_PROMISE, "",
               "| Measure | Judge + people | People only | Self-Instruct paper |", "|---|---:|---:|---:|"]
        for measure, rate in rates.items():
            md.append(f"| {MEASURE_LABELS[measure]} | {_interval(rate.estimate, rate.low, rate.high, '.0%')} | "
                      f"{_interval(rate.human_estimate, rate.human_low, rate.human_high, '.0%')} | "
                      f"{rate.paper_rate:.0%} |")
        md.append("")
    elif run["scope"] == "pool" and calibrated:
        md += [f"No pool-wide rates: {why}", ""]
    stats = {"judge_run_id": run["id"], "model": config.get("model"), "prompt_versions": versions,
             "judged": progress["parsed"], "export_judged": judged, "dropped": dropped, "study_id": study_id,
             "calibration": calibrated, "pool_rates": rates}
    return md[:-1] if md and md[-1] == "" else md, stats
