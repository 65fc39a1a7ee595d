from pathlib import Path

import streamlit as st

from pages.common import current_pool
from selfinstruct import datadir, export, quality
from selfinstruct.export import CSV_SAFETY_NOTE, FORMAT_INFO, FORMATS, PRESETS, ExportFilters, ExportOptions
from selfinstruct.model import QUESTIONS, SEVERAL_STUDIES_RULE
from selfinstruct.store import PoolError

PREVIEW_ROWS = 20
CLASSIFICATION = {"both": "Included", "only": "Only these", "exclude": "Left out"}
TRAINERS = {"none": "None", **{name: preset.label for name, preset in PRESETS.items()}}

pool = current_pool()

st.title("Export")
st.write(
    "The curated pool in the format your trainer reads: seed tasks and accepted generated tasks, "
    "each with the instances the filters kept. Pick a format and filters, check the counts and "
    "the first rows, then download or write the files. A dataset card (README.md with the counts, "
    "the generation settings, the filters, quality results and charts) goes with the data. Pick a "
    "trainer to get the format it reads and its config beside the data.")

counts = pool.counts()
if counts.seeds + counts.accepted == 0:
    st.info("The pool is empty: load seed tasks and run a few rounds first.", icon=":material/spa:")
    st.page_link("pages/seed.py", label="Go to Seed", icon=":material/spa:")
    st.stop()

# -- choose ------------------------------------------------------------------------------
trainer = st.segmented_control("Trainer", list(TRAINERS), format_func=TRAINERS.get, default="none",
                               required=True, key="exp_trainer",
                               help="Hand-off to a trainer: picks a format it reads and writes its config "
                                    "beside the data (axolotl: a YAML snippet; LLaMA-Factory: a "
                                    "dataset_info.json entry; TRL: a section in the card).")
preset = None if trainer == "none" else trainer
if preset:
    st.caption(PRESETS[preset].description)
fmt = st.segmented_control("Format", list(PRESETS[preset].formats if preset else FORMATS),
                           format_func=lambda f: FORMAT_INFO[f].label,
                           default=PRESETS[preset].default_format if preset else "selfinstruct", required=True,
                           key=f"exp_format_{preset}" if preset else "exp_format")
st.caption(FORMAT_INFO[fmt].description)
if fmt == "csv":
    st.caption(CSV_SAFETY_NOTE)

options = ExportOptions()
if fmt == "chat":
    system = st.text_area("System message (optional)", key="exp_system", height=80,
                          placeholder="Leave empty for conversations without a system message.")
    options = ExportOptions(system_prompt=system.strip() or None)
elif fmt == "prompt-completion":
    seed = st.number_input("Template seed", min_value=0, value=0, step=1, key="exp_template_seed",
                           help="Which template each row gets is drawn at random from this seed; the "
                                "same seed and filters give the same file.")
    options = ExportOptions(template_seed=int(seed))
    st.caption("Templates: " + ", ".join(f"`{t.id}`" for t in options.templates))

if preset:   # what will be written for the trainer, for a data file with the default name
    shown_data = f"selfinstruct-data{FORMAT_INFO[fmt].extension}"
    configs = export.config_files(preset, shown_data, fmt)
    with st.expander(f"What {PRESETS[preset].label} gets", expanded=True, icon=":material/model_training:"):
        for config in configs:
            st.caption(f"`{config.name}`, beside the data file (for a data file named `{shown_data}`; "
                       "the names follow the file's name):")
            st.code(config.text, language=config.language)
        if any(c.name == "dataset_info.json" for c in configs):
            st.caption("Written to a folder that already has a dataset_info.json, this entry is added to "
                       "it (or replaces the entry of the same name); the other entries stay.")
        st.caption("In the dataset card:" if configs else "The dataset card gets this section:")
        st.code(export.presets.card_section(preset, shown_data, fmt), language="markdown", wrap_lines=True)

with st.expander("Filters", expanded=True, icon=":material/filter_alt:"):
    left, middle, right = st.columns(3)
    with left:
        st.markdown("**What**")
        include_seeds = st.checkbox("Seed tasks", value=True, key="exp_seeds")
        include_generated = st.checkbox("Generated tasks", value=True, key="exp_generated")
        clf = st.selectbox("Classification tasks", list(CLASSIFICATION), format_func=CLASSIFICATION.get,
                           key="exp_clf")
        include_empty = False
        if FORMAT_INFO[fmt].per_task:
            include_empty = st.checkbox("Also tasks with no instance left", key="exp_empty",
                                        help="Written with an empty instance list. The other formats "
                                             "are one row per instance, so such tasks have no row there.")
    runs = pool.explore.pool_runs()
    with middle:
        st.markdown("**Generated tasks from**")
        run_ids = [r["id"] for r in runs]
        names = {r["id"]: f"Run {r['id']}" + (f" · {r['name']}" if r["name"] else "")
                 + f" ({r['accepted']:,} accepted)" for r in runs}
        chosen_runs = st.multiselect("Runs", run_ids, format_func=names.get, key="exp_runs",
                                     placeholder="Every run")
        last_round = max((r["last_round"] or 1 for r in runs), default=1)
        round_range = (1, last_round)
        if last_round > 1:
            round_range = st.slider("Rounds", 1, last_round, (1, last_round), key="exp_rounds",
                                    help="Round numbers count within each run.")
        exclude_rescued = st.checkbox("Leave out rescued tasks", key="exp_no_rescued",
                                      help="Tasks a person rescued from the rejects.")
        approved_only = st.checkbox("Only human-approved tasks", key="exp_approved_only",
                                    help="Generated tasks a person rescued, approved or edited "
                                         "(on the Rejects and Pool pages).")
        exclude_invalid = st.checkbox("Leave out what annotators labeled invalid", key="exp_no_invalid",
                                      help="Tasks most of whose labels say not a valid task, and instances "
                                           "most of whose labels say the input or output is wrong. "
                                           + SEVERAL_STUDIES_RULE)
    with right:
        st.markdown("**Length in words**")
        a, b = st.columns(2)
        min_iw = a.number_input("Instruction, min", min_value=0, value=None, step=1, key="exp_min_iw")
        max_iw = b.number_input("Instruction, max", min_value=0, value=None, step=1, key="exp_max_iw")
        min_ow = a.number_input("Output, min", min_value=0, value=None, step=1, key="exp_min_ow")
        max_ow = b.number_input("Output, max", min_value=0, value=None, step=1, key="exp_max_ow")
    judge_runs = pool.judge.runs()
    judge_run_id, judge_drop = None, []
    if judge_runs:
        st.markdown("**Model judge**")
        run_col, drop_col = st.columns(2)
        judge_names = {None: "No judge run", **{
            r["id"]: f"Judge run {r['id']} · {r['config'].get('model', '?')} · "
                     + (f"study {r['study_id']}" if r["scope"] == "study" else "pool")
                     + f" ({r['answered']:,}/{r['items']:,} judged)" for r in judge_runs}}
        judge_run_id = run_col.selectbox(
            "Judge run", list(judge_names), format_func=judge_names.get, key="exp_judge_run",
            help="Its figures go in the dataset card; with answers chosen beside it, its verdicts filter the "
                 "export. A model's verdicts, not people's labels.")
        judge_drop = drop_col.multiselect(
            "Leave out what the judge answered \"no\" to", list(QUESTIONS), format_func=quality.MEASURE_LABELS.get,
            key="exp_judge_drop", disabled=judge_run_id is None, placeholder="Nothing (report only)",
            help="Valid task: the task goes. Input appropriate, Output acceptable: the instance the judge saw "
                 "goes. The judge's latest readable verdict per item counts; items it did not judge stay.")

try:
    filters = ExportFilters(
        include_seeds=include_seeds, include_generated=include_generated, runs=tuple(chosen_runs),
        min_round=round_range[0] if round_range[0] > 1 else None,
        max_round=round_range[1] if round_range[1] < last_round else None,
        classification={"only": True, "exclude": False}.get(clf),
        exclude_rescued=exclude_rescued, human_approved_only=approved_only, exclude_invalid=exclude_invalid,
        min_instruction_words=min_iw, max_instruction_words=max_iw,
        min_output_words=min_ow, max_output_words=max_ow, include_empty_tasks=include_empty,
        judge_run_id=judge_run_id, judge_exclude=tuple(judge_drop) if judge_run_id is not None else (),
    ).for_format(fmt)
except ValueError as exc:
    st.error(f"Check the filters: {exc}", icon=":material/error:")
    st.stop()

# -- counts and preview ------------------------------------------------------------------
found = pool.explore.export_counts(filters)
records = (found["tasks"] + (found["empty_tasks"] if include_empty else 0)
           if FORMAT_INFO[fmt].per_task else found["instances"])
columns = st.columns(5)
for column, (label, value) in zip(columns, [
    ("Tasks", found["tasks"]), ("Instances", found["instances"]), ("Seed tasks", found["seed_tasks"]),
    ("Generated tasks", found["generated_tasks"]), ("Records in the file", records),
]):
    column.metric(label, f"{value:,}")
notes = [f"{found['classification_tasks']:,} classification task(s)",
         f"{found['with_input']:,} instance(s) with an input"]
if filters.judge_exclude:
    unjudged = pool.explore.export_counts(ExportFilters.from_dict({**filters.to_dict(), "judge_exclude": []}))
    notes.append(f"the judge's verdicts leave out {unjudged['tasks'] - found['tasks']:,} task(s) and "
                 f"{unjudged['instances'] - found['instances']:,} instance(s)")
if found["empty_tasks"]:
    notes.append(f"{found['empty_tasks']:,} matching task(s) have no instance left and are "
                 + ("written with no instances" if include_empty else "skipped"))
st.caption(" · ".join(notes) + ".")

st.subheader("Preview")
if not records:
    st.warning("Nothing matches these filters.", icon=":material/filter_alt_off:")
    st.stop()
st.caption(f"The first {min(PREVIEW_ROWS, found['instances'])} rows, in file order "
           "(\u2013 where a row has no value, as a seed task has no run or round):")
st.dataframe(export.preview_table(pool, filters, PREVIEW_ROWS), hide_index=True, key="exp_preview_table",
             column_config={"instruction": st.column_config.TextColumn(width="large"),
                            "output": st.column_config.TextColumn(width="large")})
st.caption(f"The first records as {FORMAT_INFO[fmt].label} writes them:")
st.code("\n".join(export.preview_records(pool, fmt, filters, options, limit=3)),
        language="json" if fmt not in ("csv", "parquet") else None, wrap_lines=True)
if fmt == "parquet":
    st.caption("(Shown as CSV; the Parquet file holds the same columns with their types.)")

# -- card, download, write -------------------------------------------------------------------
st.subheader("Get the files")
with_card = st.toggle("Include the dataset card (README.md and charts, in a .zip)", value=True,
                      key="exp_card")
title = st.text_input("Dataset title", value="Self-Instruct dataset", key="exp_title") if with_card else None
license, language = None, None
if with_card:
    lic_col, lang_col = st.columns(2)
    license_text = lic_col.text_input(
        "License", value="other", key="exp_license",
        help="As the Hugging Face Hub names licenses (apache-2.0, cc-by-4.0, mit, ...). \"other\" means "
             "not chosen yet: choose one before sharing, one that fits the terms of the model that "
             "wrote the data and of your seed tasks.")
    language_text = lang_col.text_input("Language(s)", value="en", key="exp_language",
                                        help="ISO 639 codes, comma-separated (en, fr, ...).")
    try:
        license, language = export.check_license(license_text), export.check_languages(language_text)
    except ValueError as exc:
        st.error("Check the card's metadata.", icon=":material/error:")
        st.text(str(exc))
        st.stop()
    if license == "other":
        st.caption("No license chosen: the card's header says `license: other` and asks to choose one.")
    with st.expander("Dataset card preview", icon=":material/description:"):
        card_key = (fmt, filters, options, title, preset, license, language)
        if st.button("Build the card", key="exp_card_build", icon=":material/description:",
                     help="Reads every exported instruction for the charts (a few seconds on a large pool)."):
            st.session_state["exp_card_built"] = (card_key, export.build_card(
                pool, fmt, filters, options, title=title, preset=preset, license=license,
                language=language).markdown)
        built = st.session_state.get("exp_card_built")
        if built and built[0] == card_key:
            st.code(built[1], language="markdown", wrap_lines=True, height=400)
        elif built:
            st.caption("The settings changed since the card was built: build it again.")

download_col, write_col = st.columns(2)
with download_col:
    st.markdown("**Download**")
    file_name = export.download_name(fmt, card=with_card, pool_name=Path(str(pool.path)).stem, preset=preset)
    name = Path(file_name).stem
    is_zip = export.zipped(fmt, card=with_card, preset=preset)
    st.download_button(
        f"Download {file_name}",
        data=lambda: export.export_archive_bytes(pool, fmt, filters, options, name=name, card=with_card,
                                                 title=title, preset=preset, license=license,
                                                 language=language),
        file_name=file_name,
        mime="application/zip" if is_zip else FORMAT_INFO[fmt].mime,
        key="exp_download", icon=":material/download:", type="primary",
        help="The file is built when you click, on the server, then sent to your browser.")
with write_col:
    st.markdown("**Write on this machine**")
    default_path = Path("exports") / f"selfinstruct-data{'.zip' if is_zip else FORMAT_INFO[fmt].extension}"
    target = st.text_input("Path in the data directory", value=str(default_path),
                           key=f"exp_path_{fmt}_{is_zip}",
                           help="Files written on the server stay in the app's data directory "
                                f"({datadir.data_dir()}). A path ending in .zip gets one archive "
                                "(data, README.md, charts/); otherwise the card and charts are written "
                                "beside the data file and named after it: alpaca.json gets "
                                "alpaca_README.md and alpaca_charts/; a trainer's config goes beside "
                                "it too (a dataset_info.json there is added to, not replaced).")
    if st.button("Write", key="exp_write", icon=":material/save:"):
        try:   # a visitor's path: only inside the data directory, only export files
            out = datadir.confined_path(target, suffixes=(".zip", *{i.extension for i in FORMAT_INFO.values()}))
            result = export.export_dataset(pool, fmt, out, filters, options, card=with_card, title=title,
                                           preset=preset, license=license, language=language)
        except datadir.PathRefused as exc:
            st.error("Not written.", icon=":material/block:")
            st.text(str(exc))
        except (OSError, PoolError, ValueError) as exc:   # ValueError: ExportNameTaken, PresetError
            st.error("Could not write the export.", icon=":material/error:")
            st.text(str(exc))
        else:
            st.success(f"Wrote {result.records:,} record(s) ({result.bytes / 1e6:.2f} MB, "
                       f"{result.seconds:.1f} s).", icon=":material/check_circle:")
            st.text("\n".join([datadir.shown(result.path)]
                              + ([f"card: {datadir.shown(result.card_path)}"] if result.card_path else [])
                              + ([f"charts: {datadir.shown(result.chart_paths[0].parent)}"]
                                 if result.chart_paths else [])
                              + [f"{PRESETS[preset].label} config: {datadir.shown(path)}"
                                 for path in result.config_paths]
                              + [f"  {name}" for name in result.files]))
