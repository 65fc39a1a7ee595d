import math

import pandas as pd
import streamlit as st

from pages.common import act_and_rerun, allowed, current_pool, current_user, page_link, show_flash
from selfinstruct import actions, charts, embed, explore, model, quality, render, semantic
from selfinstruct.novelty import rouge_l, tokenize
from selfinstruct.export import ExportFilters, PAPER_LENGTHS

PAGE_SIZE = 50
VIEWS = {"browse": "Browse and edit", "diversity": "Diversity", "duplicates": "Duplicates"}
GROUPS_PER_PAGE = 20
CLASSIFICATION = {"both": "All tasks", "only": "Classification tasks", "exclude": "Other tasks"}
REVIEWS = {"all": "Any", "untouched": "Not reviewed", "human_approved": "Human-approved",
           model.RESCUED: "Rescued", model.APPROVED: "Approved here"}
ACTION_LABELS = {actions.EDIT_CANDIDATE: "edited the instruction of", actions.EDIT_INSTANCE: "edited instance",
                 actions.APPROVE: "approved", actions.REMOVE: "removed", actions.REMOVE_INSTANCE: "removed instance",
                 actions.REMOVE_DUPLICATES: "removed near-duplicates, from"}

pool = current_pool()
user = current_user()
can_edit = allowed("edit")   # annotators read the pool; only owners change it

st.title("Pool")
counts = pool.counts()
st.caption(f"{counts.accepted:,} accepted generated instructions · {counts.seeds:,} seed tasks · "
           f"{counts.instances:,} kept instances")
if counts.accepted == 0:
    st.info("No generated instruction has been accepted yet. Run a few rounds on the Generate page.",
            icon=":material/auto_awesome:")
    page_link("pages/generate.py", label="Go to Generate", icon=":material/auto_awesome:")
    st.stop()

view = st.segmented_control("View", list(VIEWS), default="browse", required=True,
                            format_func=lambda v: "Browse" if v == "browse" and not can_edit else VIEWS[v],
                            key="pool_view", label_visibility="collapsed")


def act(fn, *args, done, **kwargs) -> None:
    act_and_rerun(pool, fn, *args, actor=user, flash_key="pool_flash", done=done, **kwargs)


# ============================================================================ browse
def browse() -> None:
    search_col, clf_col, review_col, run_col = st.columns([3, 2, 2, 2])
    search = search_col.text_input("Search", key="pool_search", placeholder="words in the instruction",
                                   help="Case-insensitive; finds the text anywhere in the instruction.")
    in_instances = search_col.checkbox("Also search inputs and outputs", key="pool_search_instances")
    clf = clf_col.selectbox("Tasks", list(CLASSIFICATION), format_func=CLASSIFICATION.get, key="pool_clf")
    review = review_col.selectbox("Review", list(REVIEWS), format_func=REVIEWS.get, key="pool_review",
                                  help="Human-approved: rescued from the rejects, or approved or edited here.")
    runs = pool.explore.pool_runs()
    run_names = {None: "Every run", **{r["id"]: f"Run {r['id']}" + (f" · {r['name']}" if r["name"] else "")
                                        for r in runs}}
    run_id = run_col.selectbox("Run", list(run_names), format_func=run_names.get, key="pool_run")
    judge_run_id, judge_drop, judge_show = judge_controls()
    query = dict(in_instances=in_instances, run_id=run_id,
                 classification={"only": True, "exclude": False}.get(clf),
                 review=None if review == "all" else review,
                 judge_run_id=judge_run_id, judge_drop=judge_drop, judge_show=judge_show)

    total = pool.explore.pool_browse_count(search, **query)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    # The page number lives in session state (clamped when a search shrinks the result).
    st.session_state["pool_page"] = min(max(1, st.session_state.get("pool_page") or 1), pages)
    info_col, page_col = st.columns([4, 1])
    page = page_col.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1,
                                 key="pool_page")
    info_col.markdown(f"**{total:,}** matching instruction(s), newest first. Select a row to open it.")
    frame = pool.explore.pool_browse(search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, **query)
    # A selected row means a row of this page of this query: start afresh when either changes.
    signature = (search, in_instances, clf, review, run_id, judge_run_id, judge_drop, judge_show, page)
    if st.session_state.get("pool_query") != signature:
        st.session_state["pool_query"] = signature
        st.session_state["pool_table"] = {"selection": {"rows": [], "columns": []}}
        st.session_state["pool_last_selected"] = None
    event = st.dataframe(
        render.table(frame, ["review"]), key="pool_table", on_select="rerun", selection_mode="single-row", hide_index=True,
        column_order=["id", "run_id", "round", "instruction", "instances", "is_classification",
                      "max_rouge", "review"],
        column_config={
            "id": st.column_config.NumberColumn("#", width="small"),
            "run_id": st.column_config.NumberColumn("run", width="small"),
            "round": st.column_config.NumberColumn("round", width="small"),
            "instruction": st.column_config.TextColumn("instruction", width="large"),
            "instances": st.column_config.NumberColumn("instances", width="small"),
            "is_classification": st.column_config.CheckboxColumn("classification", width="small"),
            "max_rouge": st.column_config.NumberColumn("max ROUGE-L", format="%.2f", width="small",
                                                       help="Against the pool when it was accepted."),
            "review": st.column_config.TextColumn("review", width="small"),
        })
    rows = event.selection.rows if event is not None else []
    selected = int(frame.iloc[rows[0]]["id"]) if rows and rows[0] < len(frame) else None
    st.session_state.setdefault("pool_open", None)
    if selected is not None and selected != st.session_state.get("pool_last_selected"):
        st.session_state["pool_last_selected"] = selected
        st.session_state["pool_open"] = selected
    opened = st.number_input("Open item #", min_value=1, step=1, key="pool_open",
                             help="Select a row above, or type an item number.")
    if opened:
        item_panel(int(opened))
    recent_actions()


JUDGE_SHOW = {"hide": "Hide them", "only": "Show only them"}


def judge_controls() -> tuple[int | None, tuple[str, ...], str]:
    """The model judge's filter: a pool judge run, the questions whose "no" flags a task, and
    whether flagged tasks are hidden or the only ones shown."""
    runs = [r for r in pool.judge.runs() if r["answered"]]
    if not runs:
        return None, (), "hide"
    run_col, drop_col, show_col = st.columns([3, 3, 2])
    names = {None: "No judge filter", **{
        r["id"]: f"Judge run {r['id']} · {r['config'].get('model', '?')} · "
                 + (f"study {r['study_id']}" if r["scope"] == "study" else "pool")
                 + f" ({r['answered']:,} judged)" for r in runs}}
    judge_run_id = run_col.selectbox("Model judge", list(names), format_func=names.get, key="pool_judge_run",
                                     help="Filter by a judge run's verdicts (a model's, not people's labels).")
    drop = drop_col.multiselect("Its \"no\" to", list(model.QUESTIONS), format_func=quality.MEASURE_LABELS.get,
                                default=["output_ok"], key="pool_judge_drop", disabled=judge_run_id is None,
                                help="A task is flagged when the judge's latest verdict on it answers \"no\" "
                                     "to any of these.")
    show = show_col.selectbox("Flagged tasks", list(JUDGE_SHOW), format_func=JUDGE_SHOW.get, key="pool_judge_show",
                              disabled=judge_run_id is None)
    if judge_run_id is None or not drop:
        return None, (), "hide"
    return judge_run_id, tuple(drop), show


def item_panel(candidate_id: int) -> None:
    item = pool.explore.pool_item(candidate_id)
    if item is None:
        st.warning(f"There is no item #{candidate_id}.", icon=":material/search_off:")
        return
    with st.container(border=True):
        where = f"run {item['run_id']}, round {item['round']}" if item["run_id"] else "no run"
        state = item["status"] + (f" ({item['reason']})" if item["reason"] else "")
        review = f" · review: {item['review']}" if item["review"] else ""
        rouge = f" · max ROUGE-L {item['max_rouge']:.2f}" if item["max_rouge"] is not None else ""
        st.markdown(f"**Item #{candidate_id}** · {where} · {state}{review} · decided by "
                    f"{item['decided_by']}{rouge}")
        if item["status"] != "accepted":
            st.info("This item is not in the accepted pool (it was removed or rejected); see the "
                    "Rejects page, or undo the removal below.", icon=":material/info:")
            st.text(item["instruction"])
            return
        if not can_edit:
            read_only_item(item)
            return
        text_key = f"pool_instr_{candidate_id}"
        new_text = st.text_area("Instruction", value=item["instruction"], key=text_key, height=90)
        if new_text.strip() != item["instruction"]:
            for warning in explore.edit_warnings(new_text):
                st.warning(warning, icon=":material/warning:")
        save_col, approve_col, remove_col = st.columns(3)
        if save_col.button("Save instruction", key="pool_save_instruction", icon=":material/save:",
                           disabled=new_text.strip() == item["instruction"]):
            act(actions.edit_instruction, candidate_id, new_text, done=f"Saved the instruction of #{candidate_id}.")
        approved = model.is_human_approved(item)
        if approve_col.button("Approve", key="pool_approve", icon=":material/verified:", disabled=approved,
                              help="Mark it as checked by a person (the export can keep only these)."):
            act(actions.approve, candidate_id, done=f"Approved #{candidate_id}.")
        if remove_col.button("Remove from the pool", key="pool_remove", icon=":material/delete:",
                             help="It becomes a reject with reason 'removed'; you can undo it."):
            act(actions.remove, candidate_id, done=f"Removed #{candidate_id} from the pool.")

        kept = [i for i in item["instances"] if i["status"] == "kept"]
        dropped = [i for i in item["instances"] if i["status"] != "kept"]
        st.markdown(f"**{len(kept)} kept instance(s)**")
        if not kept:
            st.caption("No kept instance: exports skip this task unless asked for empty tasks.")
        for inst in kept:
            iid = inst["id"]
            in_col, out_col, button_col = st.columns([4, 4, 1])
            new_in = in_col.text_area("Input", value=inst["input"], key=f"pool_in_{iid}", height=100)
            new_out = out_col.text_area("Output", value=inst["output"], key=f"pool_out_{iid}", height=100)
            changed = (new_in.strip(), new_out.strip()) != (inst["input"], inst["output"])
            if button_col.button("Save", key=f"pool_save_inst_{iid}", disabled=not changed,
                                 icon=":material/save:"):
                act(actions.edit_instance, iid, input=new_in, output=new_out,
                    done=f"Saved instance {iid} of #{candidate_id}.")
            if button_col.button("Drop", key=f"pool_drop_inst_{iid}", icon=":material/delete:"):
                act(actions.remove_instance, iid, done=f"Dropped instance {iid} of #{candidate_id}.")
        if dropped:
            st.caption(f"{len(dropped)} instance(s) the filters (or a person) dropped:")
            st.dataframe(pd.DataFrame(dropped)[["id", "reason", "input", "output"]], hide_index=True,
                         key=f"pool_dropped_{candidate_id}")


def read_only_item(item: dict) -> None:
    """What an annotator sees of an item: its text and instances, as plain text."""
    st.text(item["instruction"])
    kept = [i for i in item["instances"] if i["status"] == "kept"]
    st.markdown(f"**{len(kept)} kept instance(s)**")
    for inst in kept:
        in_col, out_col = st.columns(2)
        in_col.caption("Input")
        in_col.text(inst["input"] or "(empty)")
        out_col.caption("Output")
        out_col.text(inst["output"] or "(empty)")


def recent_actions() -> None:
    changes = actions.history(pool, actions.POOL_ACTIONS + actions.DEDUP_ACTIONS, undos=False, limit=8)
    if not changes:
        return
    with st.expander("Recent changes on this page", icon=":material/history:",
                     expanded=bool(st.session_state.get("pool_flash_batch"))):
        for entry in changes:
            text_col, button_col = st.columns([5, 1])
            target = f"#{entry['target_id']}" if entry["target_kind"] == model.CANDIDATE else str(entry["target_id"])
            if entry["items"] > 1:
                target = f"{entry['items']:,} items"
            when = entry["created_at"].strftime("%Y-%m-%d %H:%M:%S")
            status = "" if entry["open"] else " (undone)"
            text_col.text(f"{when} · {entry['actor']} {ACTION_LABELS.get(entry['action'], entry['action'])} "
                          f"{target}{status}")
            if can_edit and entry["open"] and button_col.button("Undo", key=f"pool_undo_{entry['id']}",
                                                            icon=":material/undo:"):
                act(actions.undo_batch, entry["batch"], done=f"Undid: {ACTION_LABELS.get(entry['action'])} {target}.")


# ============================================================================ diversity
@st.cache_data(show_spinner="Reading the leading verbs ...", max_entries=8)
def verb_table(path: str, version: tuple, top: int) -> pd.DataFrame:
    return explore.verb_noun_counts(current_pool().runs.machine_instructions(), top_verbs=top, nouns_per_verb=4)


@st.cache_data(show_spinner="Scoring every generated instruction against the seeds ...", max_entries=8)
def rouge_scores(path: str, version: tuple) -> explore.RougeVsSeeds:
    p = current_pool()
    return explore.rouge_vs_seeds(p.explore.seed_instruction_texts(), p.runs.machine_instructions())


@st.cache_data(show_spinner=False, max_entries=8)
def length_stats(path: str, version: tuple) -> dict:
    return current_pool().explore.export_length_stats(ExportFilters(include_seeds=False))


def diversity() -> None:
    version = pool.explore.explore_version()
    path = str(pool.path)
    st.caption("The Self-Instruct paper's diversity analysis (section 3.2), on your accepted generated "
               "instructions. Computed once per change of the pool and kept.")

    st.subheader("Leading verbs and their first nouns")
    top = st.slider("Verbs shown", 5, 40, 20, key="pool_top_verbs")
    table = verb_table(path, version, top)
    st.caption(explore.HEURISTIC_NOTE)
    none = int(table.loc[table["verb"] == explore.NONE, "count"].sum())
    recognised = counts.accepted - none
    st.markdown(f"A leading verb was recognised in **{recognised:,}** of {counts.accepted:,} instructions "
                f"({recognised / max(counts.accepted, 1):.0%}).")
    if len(table[table["verb"] != explore.NONE]):
        chart_col, table_col = st.columns([3, 2])
        chart_col.altair_chart(charts.verb_sunburst(table), key="pool_sunburst")
        table_col.dataframe(table[table["verb"] != explore.NONE][["verb", "noun", "count"]], hide_index=True,
                            height=500, key="pool_verb_table")

    st.subheader("ROUGE-L against the most similar seed")
    result = rouge_scores(path, version)
    if not len(result.scores):
        st.info("No seed tasks to compare with.", icon=":material/info:")
    else:
        hist = explore.rouge_histogram(result.scores)
        threshold = pool_threshold()
        st.altair_chart(charts.rouge_vs_seeds(hist, threshold), key="pool_rouge_chart")
        sample = (f"a random sample of {len(result.scores):,} of {result.total:,} instructions"
                  if result.sampled else f"all {result.total:,} instructions")
        st.caption(f"Exact ROUGE-L of each generated instruction against the most similar of {result.seeds:,} "
                   f"seeds ({sample}): median {result.median:.2f}, mean {result.mean:.2f}. The dashed line "
                   f"is the novelty threshold ({threshold}). Mostly low scores mean the model wrote new "
                   "tasks rather than rewording the seeds.")

    st.subheader("Lengths")
    stats = length_stats(path, version)
    metric_cols = st.columns(3)
    names = charts.LENGTH_FIELDS
    for column, field in zip(metric_cols, names):
        mean = stats["means"].get(field)
        column.metric(f"{names[field]}, mean words", f"{mean:.1f}" if mean is not None else "–",
                      delta=f"{mean - PAPER_LENGTHS[field]:+.1f} vs the paper's {PAPER_LENGTHS[field]}"
                      if mean is not None else None, delta_color="off")
    st.altair_chart(charts.length_histograms(stats), key="pool_length_chart")
    st.caption(f"Word counts over every accepted generated instruction with kept instances "
               f"({stats['counts'].get('instruction', 0):,} instructions, "
               f"{stats['counts'].get('output', 0):,} instances), counted in the database.")


# ============================================================================ duplicates
@st.cache_data(show_spinner="Finding near-duplicates ...", max_entries=8)
def duplicate_groups(path: str, version: tuple, threshold: float) -> semantic.Duplicates:
    return semantic.find_duplicates(current_pool(), embed.bundled(), threshold)


def duplicates() -> None:
    st.caption("Groups of near-duplicates among the seed tasks and accepted instructions: a kept item and the "
               "items whose cosine with it (sentence vectors of the bundled WordLlama model) is above the "
               f"threshold. The kept item is {model.KEEP_RULE}; pick another in a group if you prefer. One "
               "action removes the others of every group, as one change you can undo; a seed task goes only "
               "when you tick it.")
    missing = embed.bundled_available()
    if missing is not None:
        st.warning("Duplicate groups need the bundled embedding model, which could not be loaded here.",
                   icon=":material/warning:")
        st.text(missing)
        return
    threshold = st.slider("Cosine threshold (group above)", 0.5, 1.0, float(model.COSINE_THRESHOLD), 0.01,
                          key="dup_threshold")
    dups = duplicate_groups(str(pool.path), pool.explore.explore_version(), float(threshold))
    if not dups.groups:
        st.success(f"No near-duplicates above {threshold:.2f} among {len(dups.items):,} instructions.",
                   icon=":material/check_circle:")
        if can_edit:
            recent_actions()     # an earlier removal stays one click from its undo
        return
    grouped = sum(1 + len(g.members) for g in dups.groups)
    st.markdown(f"**{len(dups.groups):,} groups** holding {grouped:,} of {len(dups.items):,} instructions.")
    if st.session_state.get("dup_signature") != (pool.explore.explore_version(), threshold):
        # Another pool state or threshold gives other groups: earlier picks no longer apply.
        st.session_state.update(dup_signature=(pool.explore.explore_version(), threshold), dup_keep={}, dup_seeds=set())
    keep: dict[int, int] = st.session_state.setdefault("dup_keep", {})
    seeds: set[int] = st.session_state.setdefault("dup_seeds", set())
    pages = math.ceil(len(dups.groups) / GROUPS_PER_PAGE)
    page = st.number_input("Page", 1, pages, 1, key="dup_page") if pages > 1 else 1
    first = (page - 1) * GROUPS_PER_PAGE
    for n in range(first, min(first + GROUPS_PER_PAGE, len(dups.groups))):
        g = dups.groups[n]
        members = [g.keep, *g.members]
        items = [dups.items[i] for i in members]
        pair = dups.pairwise(g)
        kept = keep.get(n, g.keep)
        with st.container(border=True):
            st.markdown(f"**Group {n + 1}** · {len(members)} items")
            rows = []
            for k, (i, item) in enumerate(zip(members, items)):
                rows.append({
                    "keep": i == kept, "item": f"{'seed' if item['kind'] == model.SEED_TASK else '#'} {item['id']}",
                    "instruction": item["instruction"],
                    "cosine with kept": float(pair[members.index(kept), k]),
                    "ROUGE-L with kept": rouge_l(tokenize(dups.items[kept]["instruction"]), tokenize(item["instruction"])),
                })
            st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"dup_table_{n}", column_config={
                "cosine with kept": st.column_config.NumberColumn(format="%.3f"),
                "ROUGE-L with kept": st.column_config.NumberColumn(format="%.3f")})
            if len(members) > 2:
                with st.expander("Every pair: cosine (ROUGE-L)"):
                    names = [row["item"] for row in rows]
                    st.dataframe(pd.DataFrame(
                        [[f"{pair[a, b]:.3f} ({rouge_l(tokenize(items[a]['instruction']), tokenize(items[b]['instruction'])):.3f})"
                          for b in range(len(members))] for a in range(len(members))], index=names, columns=names),
                        key=f"dup_pairs_{n}")
            if can_edit:
                choice = st.radio("Keep", members, index=members.index(kept), horizontal=True, key=f"dup_keep_{n}",
                                  format_func=lambda i: f"{'seed' if dups.items[i]['kind'] == model.SEED_TASK else '#'} "
                                                        f"{dups.items[i]['id']}")
                if choice != g.keep:
                    keep[n] = choice
                else:
                    keep.pop(n, None)
                for i, item in zip(members, items):
                    if item["kind"] == model.SEED_TASK and i != choice:
                        ticked = st.checkbox(f"Also remove seed task {item['id']}", key=f"dup_seed_{n}_{item['id']}",
                                             value=item["id"] in seeds)
                        (seeds.add if ticked else seeds.discard)(item["id"])
    if can_edit:
        candidates, seed_ids = dups.removal(keep, [s for s in seeds])
        st.markdown(f"The action removes **{len(candidates):,} accepted instructions**"
                    + (f" and **{len(seed_ids):,} seed tasks** you ticked" if seed_ids else "")
                    + f" from {len(dups.groups):,} groups, and keeps one item of each.")
        if st.button("Remove the near-duplicates", key="dup_apply", type="primary", icon=":material/delete_sweep:",
                     disabled=not (candidates or seed_ids)):
            st.session_state.pop("dup_keep", None)
            st.session_state.pop("dup_seeds", None)
            act(actions.remove_duplicates, candidates, seed_ids,
                reason=f"near-duplicate (cosine > {threshold:.2f})",
                done=f"Removed {len(candidates) + len(seed_ids):,} near-duplicates as one change.")
        recent_actions()


def pool_threshold() -> float:
    runs = pool.runs.all()
    return float((runs[0]["config"] or {}).get("rouge_threshold", model.ROUGE_THRESHOLD)) if runs else model.ROUGE_THRESHOLD


# ============================================================================ page
show_flash("pool_flash")
if view == "browse":
    browse()
elif view == "duplicates":
    duplicates()
else:
    diversity()
