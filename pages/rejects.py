import pandas as pd
import streamlit as st

from pages.common import allowed, current_pool, current_user, page_link, require
from selfinstruct import actions, charts, model, review
from selfinstruct.render import escape_markdown, marked_html
from selfinstruct.render import table as render_table

PAGE_SIZE = 50
MARK_STYLE = "background-color: rgba(255, 196, 0, 0.45); padding: 0 1px; border-radius: 2px;"

pool = current_pool()
user = current_user()
can_act = allowed("rescue")   # annotators read the rejects; only owners change them


def show_marked(text: str, spans) -> None:
    """Model text with marks, through selfinstruct.render (every character escaped, only
    <mark> live). One render call per line, joined on a single line: a blank line inside
    the HTML would end the HTML block and let markdown read the rest (images, links)."""
    parts, pos = [], 0
    for line in text.splitlines(keepends=True) or [""]:
        body = (line.splitlines() or [""])[0]
        end = pos + len(body)
        local = [(max(s, pos) - pos, min(e, end) - pos) for s, e in spans if s < end and e > pos]
        parts.append(marked_html(body or " ", local, mark_style=MARK_STYLE))
        pos += len(line)
    st.markdown("".join(parts), unsafe_allow_html=True)


@st.cache_data(show_spinner=False, max_entries=16)
def reject_runs(path: str, version: tuple) -> list[dict]:
    return current_pool().review.reject_runs()


@st.cache_data(show_spinner=False, max_entries=64)
def reject_rounds(path: str, version: tuple, run_id: int | None) -> list[int]:
    return current_pool().review.reject_rounds(run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def whatif_evidence(path: str, version: tuple, run_id: int | None) -> dict:
    """What the What-if tab reads from every stored decision (thresholds used, score histogram,
    keyword counts): read once per change of the pool (`version`), not on every rerun."""
    p = current_pool()
    return {"thresholds": p.review.rouge_thresholds(run_id=run_id),
            "histogram": p.review.rouge_histogram(run_id=run_id, bins=20),
            "keywords": p.review.keyword_rejects(run_id=run_id)}


def md_plain(text: str) -> str:
    """Text that markdown shows as typed (for short sentences quoting a model character)."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~" else ch for ch in text)


FLASH_ICONS = {"success": ":material/check_circle:", "warning": ":material/warning:", "error": ":material/error:"}


def flash(kind: str, text: str, where: str) -> None:
    """A message for the next run, shown beside the control that caused it (`where`: "bulk",
    "one", "history" or "log") and as a toast."""
    st.session_state["rej_flash"] = (kind, text, where)


def show_flash(where: str | None = None) -> None:
    """The pending message, if it belongs here (None: wherever this is, the last chance)."""
    message = st.session_state.get("rej_flash")
    if message and (where is None or message[2] == where):
        del st.session_state["rej_flash"]
        getattr(st, message[0])(md_plain(message[1]), icon=FLASH_ICONS.get(message[0]))


def report(outcome, verb: str, where: str, kind: str = "candidate") -> None:
    # Named, so a message drawn beside the next item shown cannot be read as being about it.
    text = f"{verb} {outcome.count:,} item(s)" + (f": {review.targets_text(kind, outcome.done)}." if outcome.count else ".")
    if outcome.skipped:
        text += " " + review.skipped_summary(outcome.skipped)
    flash("success" if outcome.count else "warning", text, where)


def clear_selection() -> None:
    # Only before the table is drawn; after it, call reset_selection_next_run().
    st.session_state["rej_table"] = {"selection": {"rows": [], "columns": []}}


def reset_selection_next_run() -> None:
    st.session_state.pop("rej_signature", None)


def act(fn, verb: str, *args, where: str, **kwargs) -> None:
    require("rescue")
    try:
        outcome = fn(pool, *args, actor=user, **kwargs)
    except actions.ActionError as exc:
        flash("error", str(exc), where)
    else:
        report(outcome, verb, where, "instance" if fn is actions.rescue_instances else "candidate")
        if outcome.count:
            st.session_state["rej_reset"] = True   # a reason belongs to one action
    reset_selection_next_run()
    st.rerun()


def act_on_rows(fn, verb: str, *, every: bool, picked: list[int], expected: int, **kwargs) -> None:
    """A bulk action on the selected rows, or on every row matching the filters (`every`),
    which must still be the `expected` count the person confirmed."""
    if not every:
        act(fn, verb, picked, where="bulk", **kwargs)
    ids = review.matching_ids(pool, query)
    if len(ids) != expected:
        st.session_state["rej_all_ok"] = False
        flash("warning", f"The rows matching these filters changed ({expected:,} when you confirmed, "
                         f"{len(ids):,} now): nothing was done. Check the count and confirm again.", "bulk")
        st.rerun()
    act(fn, verb, ids, where="bulk", **kwargs)


st.title("Rejects")
st.write(
    "Every candidate the filters threw away, with the evidence for each decision. Rescue what "
    "the filters got wrong, confirm what they got right; every action is logged and can be undone."
)

# Whole-table reads (which runs and rounds hold rejects, the What-if evidence) are kept until
# the pool changes: `version` moves with every new row, decision and audited edit.
version = pool.explore.explore_version()
runs = reject_runs(str(pool.path), version)
if not runs:
    st.info("Nothing has been generated yet, so there is nothing to review.", icon=":material/inbox:")
    page_link("pages/generate.py", label="Generate candidates", icon=":material/auto_awesome:")
    st.stop()

if message := st.session_state.get("rej_flash"):
    st.toast(md_plain(message[1]), icon=FLASH_ICONS.get(message[0]))   # the same words stay beside the button
# After an action the reason boxes and the "all that match" choice start afresh. They are set
# before their widgets are drawn, which empties the boxes in the browser too (dropping the keys
# would leave the typed text on screen, to be sent again with the next click).
if st.session_state.pop("rej_reset", False):
    st.session_state.update(rej_why="", rej_one_why="", rej_all_ok=False, rej_scope="selected")

# -- which rejects -------------------------------------------------------------------
run_names = {r["id"]: f"Run {r['id']}" + (f" · {r['name']}" if r["name"] else "") for r in runs}
top1, top2 = st.columns(2)
run_id = top1.selectbox("Run", [None, *run_names], key="rej_run",
                        format_func=lambda r: "All runs" if r is None else run_names[r])
round_options = [None, *reject_rounds(str(pool.path), version, run_id)]
if st.session_state.get("rej_round") not in round_options:
    st.session_state["rej_round"] = None
round_number = top2.selectbox("Round", round_options, key="rej_round",
                              format_func=lambda n: "All rounds" if n is None else f"Round {n}")

browse_tab, whatif_tab = st.tabs(["Browse and review", "What-if"])

with browse_tab:
    # One row that wraps: at 1024 px the two controls do not fit side by side in fixed columns.
    controls = st.container(horizontal=True, gap="medium")
    kind = controls.segmented_control("Show", list(review.KIND_LABELS), key="rej_kind", default="instruction",
                                required=True, format_func=review.KIND_LABELS.get)
    states = [s for s in model.REVIEW_STATES if kind == "instruction" or s != model.CONFIRMED]
    state = controls.segmented_control("Review state", states, key=f"rej_review_{kind}", default="pending",
                                 required=True, format_func=review.REVIEW_LABELS.get)
    search = st.columns([2, 1])[0].text_input("Search the text", key="rej_search", placeholder="words in the instruction"
                           + (", input or output" if kind == "instance" else ""))
    base = review.RejectQuery(kind=kind, run_id=run_id, round_number=round_number, search=search, review=state)
    counts = review.reason_counts(pool, base)
    all_reasons = pool.review.reject_reasons(kind)
    reasons = st.pills(
        "Reason (none picked: every reason)", all_reasons, selection_mode="multi", key=f"rej_reasons_{kind}",
        format_func=lambda r: f"{review.reason_label(r)} · {counts.get(r, 0):,}")
    query = review.RejectQuery(kind=kind, reasons=tuple(reasons or ()), run_id=run_id,
                               round_number=round_number, search=search, review=state)

    pages = review.page_count(review.matching_total(counts, query.reasons), PAGE_SIZE)
    if st.session_state.get("rej_page", 1) > pages:
        st.session_state["rej_page"] = pages
    signature = (query, st.session_state.get("rej_page", 1))
    if st.session_state.get("rej_signature") != signature:
        st.session_state["rej_signature"] = signature
        clear_selection()
    result = review.load_page(pool, query, st.session_state.get("rej_page", 1), PAGE_SIZE, counts=counts)

    head, pager = st.columns([3, 1], vertical_alignment="bottom")
    noun = review.KIND_LABELS[kind].lower()
    head.subheader(f"{result.total:,} " + {"pending": f"rejected {noun} to review",
                                           "confirmed": f"rejected {noun}, confirmed",
                                           "rescued": f"rescued {noun}",
                                           "all": f"{noun} the filters rejected"}[state])
    pager.number_input(f"Page (of {result.pages})", min_value=1, max_value=result.pages, step=1, key="rej_page")
    if result.total:
        st.caption(f"Rows {result.first_row:,}–{result.last_row:,}. Select rows for bulk actions; "
                   "pick one below to see its evidence.")
    rows = result.rows
    # Short columns first, sized to their content, and the long texts last: a narrow window
    # (the page is ~560 px wide at 1024 px) cuts the end of a text, shown whole under
    # Evidence, never a column. Only what varies is a column: the round unless the filter fixes
    # it, the state only when several states are listed; the run is under Evidence.
    if kind == "instruction":
        shown = ["id", "round", "reason", "state", "max_rouge", "instruction"]
        texts = {"instruction": 560}
        varied = ("all", "rescued")     # "rescued" / "rescued · instances pending"
    else:
        shown = ["id", "round", "reason", "state", "input", "output", "instruction"]   # the instance's own text first
        texts = {"input": 130, "output": 130, "instruction": 240}
        varied = ("all",)
    shown = [c for c in shown if not (c == "round" and round_number is not None)
             and not (c == "state" and state not in varied)]
    config = {
        "id": st.column_config.NumberColumn("id", width=52, format="%d"),
        "round": st.column_config.NumberColumn("round", width=52),
        "reason": st.column_config.TextColumn("reason", width=130),
        "state": st.column_config.TextColumn("state", width=100),
        "max_rouge": st.column_config.TextColumn("ROUGE-L", width=68,
                                                   help="The highest ROUGE-L against the pool, as stored."),
        **{c: st.column_config.TextColumn(c, width=w) for c, w in texts.items()},
    }
    view = rows[shown].copy()
    if "max_rouge" in view:   # no score where the filter stopped before ROUGE-L
        view["max_rouge"] = [f"{x:.3f}" if pd.notna(x) else None for x in view["max_rouge"]]
    view = render_table(view)   # every gap a dash, never "None"
    event = st.dataframe(view, key="rej_table", on_select="rerun", selection_mode="multi-row",
                         hide_index=True, column_config=config)
    picked_rows = [i for i in event.selection.rows if i < len(rows)]
    picked = [int(rows["id"].iloc[i]) for i in picked_rows]

    # -- bulk actions (owners) ------------------------------------------------------
    if can_act:
        total = result.total
        if st.session_state.get("rej_all_for") != (query, total):   # other rows: confirm them again
            st.session_state["rej_all_for"] = (query, total)
            st.session_state["rej_all_ok"] = False
        st.session_state.setdefault("rej_scope", "selected")   # no default=: the reset above sets it
        scope = st.segmented_control(
            "Act on", ("selected", "all"), key="rej_scope", required=True,
            format_func=lambda s: (f"Selected rows ({len(picked)})" if s == "selected"
                                   else f"All {total:,} that match these filters"))
        every = scope == "all"
        if every:
            sure = st.checkbox(f"Yes, act on all {total:,} {noun} that match these filters "
                               "(on every page; one undo undoes them all)", key="rej_all_ok", disabled=not total)
            ready, n_label = sure and total > 0, f"all {total:,}"
        else:
            ready, n_label = bool(picked), f"{len(picked)} selected"
        why = st.text_input("Why (optional; saved in the audit log)", key="rej_why")
        bulk = {"every": every, "picked": picked, "expected": total, "reason": why}
        buttons = st.container(horizontal=True)    # whole labels, wrapping when narrow
        if kind == "instruction":
            if buttons.button(f"Rescue {n_label}", key="rej_bulk_rescue", disabled=not ready,
                         icon=":material/undo:", help="Unparseable rows are skipped: edit them one at a time."):
                act_on_rows(actions.rescue, "Rescued", **bulk)
            if buttons.button(f"Confirm {n_label}", key="rej_bulk_confirm", disabled=not ready,
                         icon=":material/check:"):
                act_on_rows(actions.confirm, "Confirmed", **bulk)
            show_flash("bulk")
            st.caption(review.NOVELTY_NOTE)
        else:
            if buttons.button(f"Keep {n_label}", key="rej_bulk_rescue", disabled=not ready,
                         icon=":material/undo:", help="Rescue the instances: they join their instruction's kept ones."):
                act_on_rows(actions.rescue_instances, "Kept", **bulk)
            show_flash("bulk")

    # -- one reject up close -----------------------------------------------------------
    st.subheader("Evidence")
    page_ids = [int(i) for i in rows["id"]]
    if not page_ids:
        st.caption("No rejects match these filters.")
    else:
        detail_key = f"rej_detail_{kind}"   # candidate and instance ids overlap
        if len(picked) == 1 and st.session_state.get("rej_last_single") != (kind, picked[0]):
            st.session_state[detail_key] = picked[0]
        st.session_state["rej_last_single"] = (kind, picked[0]) if len(picked) == 1 else None
        if st.session_state.get(detail_key) not in page_ids:
            st.session_state[detail_key] = page_ids[0]
        labels = dict(zip(page_ids, rows["instruction"]))
        detail_id = st.selectbox("Inspect", page_ids, key=detail_key,
                                 format_func=lambda i: f"#{i} · {(labels[i] or '')[:90]}")
        if st.session_state.get("rej_one_why_for") != (kind, detail_id):   # another item: no reason yet
            st.session_state["rej_one_why_for"] = (kind, detail_id)
            st.session_state["rej_one_why"] = ""

        def history(target_kind: str, target_id: int) -> None:
            entries = pool.review.review_history(target_kind, target_id)
            if not entries:
                return
            with st.expander(f"History ({len(entries)})", icon=":material/history:"):
                st.dataframe(pd.DataFrame([{
                    "entry": e["id"], "when": e["created_at"], "who": e["actor"], "action": e["action"],
                    "why": e["reason"], "undone by": e["undone_by"]} for e in entries]),
                    hide_index=True, key="rej_history")
            last = next((e for e in entries if e["action"] in actions.REJECTS_ACTIONS and e["undone_by"] is None), None)
            if can_act and last and last["id"] == entries[0]["id"]:
                if st.button(f"Undo {last['action']} (entry #{last['id']})", key="rej_undo_one",
                             icon=":material/undo:"):
                    require("rescue")
                    try:
                        actions.undo(pool, last["id"], actor=user)
                    except actions.ActionError as exc:
                        flash("error", str(exc), "history")
                    else:
                        flash("success", f"Undid entry #{last['id']}.", "history")
                    st.rerun()
            show_flash("history")

        with st.container(border=True):
            if kind == "instruction":
                cand = pool.review.candidate_detail(detail_id)
                exp = review.explain_candidate(cand, k=10)
                meta = f"Candidate #{cand['id']} · run {cand['run_id']} · round {cand['round']}"
                h1, h2 = st.columns([3, 1])
                h1.markdown(f"**{meta}**")
                h2.badge(exp.label, color="orange" if cand["status"] == model.REJECTED else "green")
                if exp.message:
                    st.text(exp.message)
                if model.is_rescued(cand):
                    st.success("Rescued: in the pool, accepted by a person.", icon=":material/check_circle:")
                    if not cand["instances"]:
                        st.info("Instances pending: the next round of any run classifies this instruction "
                                "and generates its instances.", icon=":material/hourglass_top:")
                elif cand["review"] == "confirmed":
                    st.caption("A person confirmed this rejection.")

                if exp.kind == "semantic" and exp.neighbours:
                    nb = exp.neighbours[0]
                    cosine, limit = exp.facts.get("cosine"), exp.threshold
                    m1, m2, m3 = st.columns(3)
                    m1.metric("Cosine with the nearest", f"{cosine:.3f}" if cosine is not None else "?")
                    m2.metric("Cosine threshold (reject above)", f"{limit}" if limit is not None else "?")
                    m3.metric("ROUGE-L of the pair", f"{nb.score:.3f}",
                              help="ROUGE-L let this candidate through; the sentence vectors say it is the same "
                                   f"task (ROUGE-L threshold {exp.facts.get('rouge_threshold')}).")
                    left, right = st.columns(2)
                    with left:
                        st.markdown("**Candidate**")
                        show_marked(exp.text, nb.candidate_spans)
                    with right:
                        st.markdown(f"**Nearest pool instruction** · cosine {cosine:.3f} · ROUGE-L {nb.score:.3f}")
                        show_marked(nb.text, nb.neighbour_spans)
                    st.caption("Marked: the words the two share, in order (the basis of ROUGE-L). Vectors from "
                               + escape_markdown(str(exp.facts.get("embedder") or "?")) + ".")
                elif exp.kind == "rouge" and exp.neighbours:
                    m1, m2, m3 = st.columns(3)
                    m1.metric("Max ROUGE-L", f"{exp.max_rouge:.3f}")
                    m2.metric("Threshold (reject above)", f"{exp.threshold}" if exp.threshold is not None else "?")
                    best = exp.neighbours[0]
                    m3.metric("Shared words with the nearest", f"{best.shared}", help=best.shared_words
                              + ": the longest common subsequence, the basis of ROUGE-L.")
                    n_shown = len(exp.neighbours)
                    choice = st.segmented_control(
                        "Compare with", list(range(n_shown)), key=f"rej_neighbour_{detail_id}", default=0,
                        required=True,
                        format_func=lambda i: f"{i + 1}. {exp.neighbours[i].score:.3f}")
                    nb = exp.neighbours[choice]
                    left, right = st.columns(2)
                    with left:
                        st.markdown("**Candidate**")
                        show_marked(exp.text, nb.candidate_spans)
                    with right:
                        st.markdown(f"**Pool instruction {choice + 1}** · ROUGE-L {nb.score:.3f} · "
                                    + nb.shared_words)
                        show_marked(nb.text, nb.neighbour_spans)
                    st.caption("Marked: the words of the longest common subsequence, in order, in both texts.")
                    if abs(nb.recomputed - nb.score) > 1e-9:
                        st.caption(f"Scored again now, this pair gives {nb.recomputed:.3f}; the stored "
                                   "score is what the decision used.")
                    st.dataframe(
                        pd.DataFrame({"rank": range(1, n_shown + 1),
                                      "ROUGE-L": [n.score for n in exp.neighbours],
                                      "pool instruction": [n.text for n in exp.neighbours]}),
                        hide_index=True, key="rej_neighbours",
                        column_config={"ROUGE-L": st.column_config.ProgressColumn(
                            "ROUGE-L", min_value=0.0, max_value=1.0, format="%.3f")})
                elif exp.kind == "unparseable":
                    st.caption("The model's text, exactly as it came:")
                    st.code(exp.text, language=None, wrap_lines=True)
                elif exp.kind == "length":
                    m1, m2 = st.columns(2)
                    m1.metric("Words", f"{exp.words:,}")
                    m2.metric(f"Limit ({exp.facts['direction']})", f"{exp.limit:,}" if exp.limit else "?")
                    show_marked(exp.text, [])
                else:
                    if exp.kind == "keyword" and exp.keywords:
                        st.text("Matched: " + ", ".join(exp.keywords))
                    show_marked(exp.text, exp.spans)
                    if exp.kind == "echo" and exp.facts.get("example"):
                        st.text("The prompt's example: " + exp.facts["example"])   # text from the pool: plain, never markdown

                if exp.raw_response and exp.raw_response != exp.text:
                    # Drawn only once opened: a code block costs the browser a syntax
                    # highlighter (~0.2 s) on every first view of the page otherwise.
                    raw = st.expander("The model's whole answer", icon=":material/notes:",
                                      key="rej_raw_answer", on_change="rerun")
                    if raw.open:
                        with raw:
                            st.code(exp.raw_response, language=None, wrap_lines=True)

                # actions on this one (owners)
                if can_act:
                    new_text = None     # an unparseable candidate's edited text (None: not edited)
                    needs_edit = exp.kind == "unparseable" and cand["status"] == "rejected"
                    if needs_edit:
                        st.caption("Raw text cannot join the pool as it is. Edit it into one instruction: "
                                   "Rescue is enabled once the text differs from the model's.")
                        typed = st.text_area("Instruction to rescue", value=exp.text, key=f"rej_edit_{detail_id}")
                        new_text = review.edited_text(exp.text, typed)
                    warnings = review.rescue_warnings(pool, cand, new_text) if cand["status"] == "rejected" else []
                    for warning in warnings:
                        st.warning(md_plain(warning), icon=":material/warning:")
                    one_why = st.text_input("Why (optional)", key="rej_one_why")
                    a2 = a3 = st.container(horizontal=True)   # whole labels, wrapping when narrow
                    can_rescue = cand["status"] == "rejected" and (not needs_edit or new_text is not None)
                    if a2.button("Rescue", key="rej_rescue", disabled=not can_rescue, type="primary",
                                 icon=":material/undo:", help=review.NOVELTY_NOTE):
                        # Unedited raw text goes without `instruction`: actions.rescue skips it, saying why.
                        act(actions.rescue, "Rescued", [detail_id], reason=one_why, instruction=new_text,
                            where="one")
                    if a3.button("Confirm rejection", key="rej_confirm", icon=":material/check:",
                                 disabled=cand["status"] != "rejected" or cand["review"] == "confirmed"):
                        act(actions.confirm, "Confirmed", [detail_id], reason=one_why, where="one")
                    show_flash("one")
                history("candidate", detail_id)
            else:
                inst = pool.review.instance_detail(detail_id)
                exp = review.explain_instance(inst)
                h1, h2 = st.columns([3, 1])
                h1.markdown(f"**Instance #{inst['id']} of candidate #{inst['candidate_id']} · "
                            f"run {inst['run_id']} · round {inst['round']}**")
                h2.badge(exp.label, color="orange" if inst["status"] == "rejected" else "green")
                if exp.message:
                    st.text(exp.message)
                st.markdown("**Instruction**")
                show_marked(exp.text, [])
                i1, i2 = st.columns(2)
                with i1:
                    st.markdown("**Input**")
                    st.code(exp.facts["input"] or "(empty)", language=None, wrap_lines=True)
                with i2:
                    st.markdown("**Output**")
                    st.code(exp.facts["output"] or "(empty)", language=None, wrap_lines=True)
                if exp.facts.get("conflict_outputs"):
                    st.caption("The same input was given these different outputs:")
                    st.dataframe(pd.DataFrame({"output": exp.facts["conflict_outputs"]}), hide_index=True,
                                 key="rej_conflicts")
                if exp.facts.get("duplicate_of"):
                    st.caption(f"Same input and output as instance {exp.facts['duplicate_of']} of this instruction.")
                if exp.rescue_blocked:
                    st.caption(exp.rescue_blocked)
                if can_act:
                    one_why = st.text_input("Why (optional)", key="rej_one_why")
                    a2 = st.container(horizontal=True)
                    if a2.button("Keep this instance", key="rej_rescue", disabled=exp.rescue_blocked is not None,
                                 type="primary", icon=":material/undo:"):
                        act(actions.rescue_instances, "Kept", [detail_id], reason=one_why, where="one")
                    show_flash("one")
                history("instance", detail_id)

    # -- recent actions --------------------------------------------------------------------
    log = actions.history(pool, actions.REJECTS_ACTIONS, limit=10)
    show_flash("log")
    if log:
        # In the open, not in a collapsed box: the way back from a click must be seen (issue 26).
        with st.container(border=True, key="rej_recent"):
            st.markdown(":material/history: **Recent review actions**")
            for entry in log:
                c1, c2 = st.columns([5, 1], vertical_alignment="center")
                what = {actions.RESCUE: "rescued", actions.CONFIRM: "confirmed",
                        actions.UNDO: "undid"}.get(entry["action"], entry["action"])
                line = (f"#{entry['first_id']} · {entry['created_at']:%Y-%m-%d %H:%M} · {entry['actor']} "
                        f"{what} " + review.targets_text(entry["target_kind"], entry["target_ids"] or [])
                        + (f" · why: {entry['reason']}" if entry["reason"] and entry["action"] != actions.UNDO else ""))
                c1.text(line)
                if can_act and entry["action"] in actions.REJECTS_ACTIONS and entry["open"]:
                    if c2.button("Undo", key=f"rej_undo_{entry['batch']}", icon=":material/undo:"):
                        require("rescue")
                        try:
                            outcome = actions.undo_batch(pool, entry["batch"], actor=user)
                        except actions.ActionError as exc:
                            flash("error", str(exc), "log")
                        else:
                            report(outcome, "Undid", "log", "audit entry")
                        reset_selection_next_run()
                        st.rerun()
                elif entry["action"] in actions.REJECTS_ACTIONS and not entry["open"]:
                    c2.caption("undone")
    show_flash()   # a message whose place was not drawn this time

with whatif_tab:
    evidence = whatif_evidence(str(pool.path), version, run_id)
    current = evidence["thresholds"]
    default_t = current[-1] if current else model.ROUGE_THRESHOLD
    t = st.slider("What if the ROUGE-L threshold had been", 0.0, 1.0, float(default_t), 0.01, key="rej_whatif_t",
                  help="A candidate is rejected when its highest ROUGE-L against the pool is above the threshold.")
    what = review.whatif(pool, t, run_id=run_id, thresholds_used=current)
    w1, w2 = st.columns(2)
    w1.metric("ROUGE rejects that would have passed", f"{what.would_pass:,}",
              help=f"Of {what.rouge_rejects:,} candidates still rejected for ROUGE-L: max score <= {t:.2f}.")
    w2.metric("Accepted ones that would have been rejected", f"{what.would_fail:,}",
              help=f"Of {what.accepted:,} candidates the filter accepted: max score > {t:.2f}.")
    st.caption(
        f"Counted from the stored scores (decisions made at {', '.join(str(x) for x in what.thresholds_used) or '?'}). "
        "A real run could differ: every candidate accepted earlier joins the pool and changes the scores of "
        "those after it. To decide a run again from its stored answers, use `selfinstruct refilter`.")

    hist = evidence["histogram"]
    if hist.empty:
        st.caption("No ROUGE-L scores stored yet.")
    else:
        st.altair_chart(charts.rouge_whatif(hist, what.thresholds_used, t), width="stretch", key="rej_hist")

    cos_default = model.COSINE_THRESHOLD
    cos_what = review.whatif_cosine(pool, cos_default, run_id=run_id)
    if cos_what.accepted or cos_what.semantic_rejects:
        st.subheader("The semantic gate (cosine)")
        used = cos_what.thresholds_used
        ct = st.slider("What if the cosine threshold had been", 0.5, 1.0, float(used[-1] if used else cos_default),
                       0.01, key="rej_whatif_cos",
                       help="A candidate is rejected as the same task reworded when its highest cosine with the pool "
                            "is above the threshold.")
        cos_what = review.whatif_cosine(pool, ct, run_id=run_id)
        c1, c2 = st.columns(2)
        c1.metric("Semantic rejects that would have passed", f"{cos_what.would_pass:,}",
                  help=f"Of {cos_what.semantic_rejects:,} candidates still rejected as semantic_dup: cosine <= {ct:.2f}.")
        c2.metric("Accepted ones that would have been rejected", f"{cos_what.would_fail:,}",
                  help=f"Of {cos_what.accepted:,} accepted candidates with a stored cosine: cosine > {ct:.2f}.")
        st.caption(f"Counted from the stored cosines (decisions made at "
                   f"{', '.join(str(x) for x in used) or 'no threshold: gate off'}). To decide a run again from its "
                   "stored answers and vectors, use `selfinstruct refilter RUN --cosine COS`.")

    st.subheader("Keywords that reject the most")
    keywords = evidence["keywords"]
    if keywords.empty:
        st.caption("No candidate was rejected for a keyword.")
    else:
        st.caption("\"Only this keyword\": candidates that mention no other listed keyword. Without that "
                   "keyword in the list they would go on to the ROUGE-L check. Many rescues for a keyword "
                   "suggest it is too strict for your task.")
        kc1, kc2 = st.columns([1, 1])
        kc1.altair_chart(charts.keyword_bars(keywords), width="stretch", key="rej_kw_chart")
        kc2.dataframe(keywords, hide_index=True, key="rej_keywords", column_config={
            "only_this": st.column_config.NumberColumn("only this keyword"),
        })
