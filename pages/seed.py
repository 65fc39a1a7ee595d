import streamlit as st

from pages.common import current_pool
from selfinstruct import actions, render, seeds

pool = current_pool()

st.title("Seed tasks")
st.write(
    "Seed tasks are the hand-written examples every round imitates. The paper started from 175, "
    "one instance each, 25 of them classification tasks."
)

# -- load ------------------------------------------------------------------------
starter_col, upload_col = st.columns([1, 2])
with starter_col:
    st.subheader("Starter seeds")
    st.caption("A set written for this project: varied everyday tasks, some with label sets.")
    if st.button("Load starter seeds", key="load_starter", icon=":material/download:"):
        result = seeds.load_starter_seeds(pool)
        already = result.report.in_pool
        st.session_state["seed_flash"] = (
            ("success", f"Loaded {result.imported} starter seed task(s)"
                        + (f"; {already} were already in the pool." if already else "."))
            if result.imported else ("info", result.summary("the starter seeds"))
        )
        st.rerun()

with upload_col:
    st.subheader("Upload a file")
    upload = st.file_uploader(
        "Self-Instruct JSONL, Alpaca JSON or CSV (instruction,input,output,is_classification)",
        type=["jsonl", "json", "csv", "ndjson"], key="seed_upload",
    )
    valid_only = st.checkbox("Import only the valid rows", key="seed_valid_only",
                             help="By default a file with any bad row is not imported at all.")
    if upload is not None and st.button("Import file", key="seed_import", icon=":material/upload:"):
        # The file is read as a stream from the upload, with a bar fed by bytes read.
        name = render.escape_markdown(upload.name)
        bar = st.progress(0.0, text=f"Reading {name}…")
        shown = [-1]

        def progress(done: int, total: int | None) -> None:
            if not total:
                return
            percent = min(100, done * 100 // total)
            if percent != shown[0]:
                shown[0] = percent
                bar.progress(percent / 100, text=(f"Read {done / 1e6:,.1f} of {total / 1e6:,.1f} MB"
                                                  + ("; writing to the pool…" if percent == 100 else "")))

        size = getattr(upload, "size", None)
        try:
            result = seeds.import_seeds(pool, upload, upload.name, valid_only=valid_only, progress=progress)
        except seeds.SeedImportError as exc:
            st.session_state["seed_report"] = exc.report
            st.session_state.pop("seed_flash", None)
            bar.progress(1.0, text=f"Read {name}: nothing was imported.")
        except actions.ActionError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.session_state.pop("seed_report", None)
            bar.progress(1.0, text=f"Read {name}" + (f" ({size / 1e6:,.1f} MB)." if size else "."))
            # Nothing new (a file imported before) is news, not a success. The name is the visitor's.
            st.session_state["seed_flash"] = ("success" if result.imported else "info",
                                              result.summary(name))

if flash := st.session_state.pop("seed_flash", None):
    kind, text = flash
    (st.info if kind == "info" else st.success)(
        text, icon=":material/info:" if kind == "info" else ":material/check_circle:")
if report := st.session_state.get("seed_report"):
    st.error(f"The file has {report.problem_count:,} problem(s); nothing was imported. "
             "Fix them, or tick \"Import only the valid rows\".", icon=":material/error:")
    # Plain text: messages quote the uploaded file, which is untrusted.
    st.code("\n".join(str(issue) for issue in report.issues[:500]), language=None, wrap_lines=True)
    if report.problem_count > 500:
        st.caption(f"… and {report.problem_count - 500:,} more.")

# -- show and edit -----------------------------------------------------------------
table = pool.seeds.seed_table()
n_clf = int(table["is_classification"].sum()) if len(table) else 0
st.subheader(f"{len(table):,} seed tasks")
st.caption(f"{n_clf} classification task(s). Edit cells, add rows at the bottom, select rows to "
           "delete; then save. Only the first instance of a task is shown here.")
st.data_editor(
    table, key="seed_editor", num_rows="dynamic", hide_index=True,
    disabled=["id", "instances"],
    column_config={
        "id": st.column_config.NumberColumn("id", width="small"),
        "name": st.column_config.TextColumn("name", width="small"),
        "instruction": st.column_config.TextColumn("instruction", width="large", required=True),
        "input": st.column_config.TextColumn("input (first instance)"),
        "output": st.column_config.TextColumn("output (first instance)"),
        "is_classification": st.column_config.CheckboxColumn("classification", default=False),
        "instances": st.column_config.NumberColumn("instances", width="small"),
    },
)
edits = st.session_state.get("seed_editor") or {}
pending = sum(len(edits.get(k) or []) for k in ("edited_rows", "added_rows", "deleted_rows"))
if st.button(f"Save {pending} change(s)" if pending else "Save changes", key="seed_save",
             disabled=not pending, type="primary", icon=":material/save:"):
    try:
        result = seeds.apply_seed_edits(pool, table, edits)
    except actions.ActionError as exc:
        result = seeds.SeedEditResult(0, 0, 0, [str(exc)])
    if result.ok:
        st.session_state.pop("seed_editor", None)
        st.session_state["seed_flash"] = (
            "success", f"Saved: {result.changed} edited, {result.added} added, {result.deleted} deleted."
        )
        st.rerun()
    for issue in result.issues:
        st.error(issue, icon=":material/error:")
