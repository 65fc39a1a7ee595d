import random

import pandas as pd
import streamlit as st

from pages.common import allowed, ask_for_name, current_pool, current_user, page_link
from pages.keyqueue import key_queue
from selfinstruct import charts, quality, render
from selfinstruct.model import SEVERAL_STUDIES_RULE
from selfinstruct.quality import ANSWERS, MEASURE_LABELS, QUESTION_TEXT, QUESTIONS
from selfinstruct.render import escape_markdown
from selfinstruct.store import PoolError

# One key per answer, a row of three per question as the number keys run: 1 2 3 answer the
# first question yes / no / unsure, 4 5 6 the second, 7 8 9 the third (Label Studio's and
# Argilla's habit of numbered choices). None of them is taken on this page or by Streamlit
# (which reserves C and R); typing in the note or "Go to item" box never triggers them.
ANSWER_KEYS = {q: {a: str(3 * row + col + 1) for col, a in enumerate(ANSWERS)}
               for row, q in enumerate(QUESTIONS)}
VIEWS = {"label": "Label items", "results": "Results", "data": "Study data"}
STRATA = {"none": "None", "round": "By round", "classification": "Classification vs not",
          "topic": "By topic (equal shares)"}

pool = current_pool()

st.title("Quality study")
st.caption(
    "Hand-label a random sample of the pool, as the Self-Instruct paper did: 200 generated "
    "instructions, one random instance each, three yes/no questions. The paper found 92% valid "
    "tasks, 79% appropriate inputs, 58% acceptable outputs, 54% all three. Label alone or with "
    "colleagues; results come with 95% confidence intervals and agreement between annotators."
)


# -- who is labeling: the sidebar's name (local) or the login (team) ---------------------
annotator = current_user()
if annotator == "user":
    annotator = ""

# -- studies -------------------------------------------------------------------------
if pending := st.session_state.pop("label_study_pending", None):
    st.session_state["label_study"] = pending
if flash := st.session_state.pop("label_study_flash", None):
    text, short = flash
    if short:  # fewer eligible than asked for: say so where it stays visible
        st.warning(text, icon=":material/info:")
    else:
        st.toast(text, icon=":material/check_circle:")

studies = pool.quality.studies()
scope = pool.quality.quality_scope()
if not allowed("study"):   # what everyone labels is the owners' choice
    if not studies:
        st.info("No study to label yet: an owner of this studio draws one.", icon=":material/hourglass_empty:")
else:
    with st.expander("New study", icon=":material/add_circle:", expanded=not studies):
        if scope["eligible"] == 0:
            st.info("Nothing to sample yet: a study draws from accepted generated instructions that "
                    "have at least one kept instance.", icon=":material/info:")
            page_link("pages/generate.py", label="Generate some first", icon=":material/auto_awesome:")
        else:
            run_ids = [r["run_id"] for r in scope["runs"]]
            run_names = {r["run_id"]: f"Run {r['run_id']}" + (f" · {r['name']}" if r["name"] else "")
                         + f" ({r['eligible']})" for r in scope["runs"]}
            round_numbers = [r["round"] for r in scope["rounds"]]
            round_names = {r["round"]: f"Round {r['round']} ({r['eligible']})" for r in scope["rounds"]}
            st.session_state.setdefault("study_seed", random.randrange(1, 100_000))
            with st.form("label_new_study", border=False, enter_to_submit=False):   # Enter in a box is not a draw
                st.text_input("Name", value=f"Study {len(studies) + 1}", key="study_name")
                size_col, seed_col, overlap_col = st.columns(3)
                size_col.number_input("Instructions to sample", min_value=1, value=quality.DEFAULT_SIZE,
                                      step=10, key="study_size",
                                      help=f"{scope['eligible']} accepted instructions have a kept instance. "
                                           "One random instance of each sampled instruction is labeled.")
                seed_col.number_input("Random seed", min_value=0, step=1, key="study_seed",
                                      help="The same pool, seed and filters draw the same sample.")
                overlap_col.number_input("Annotators per item", min_value=1, max_value=quality.MAX_OVERLAP, value=1,
                                         key="study_overlap",
                                         help="How many people label each item. 1: the team shares the "
                                              "items out. 2 or more: each item is labeled that many times, "
                                              "so agreement between annotators can be measured.")
                st.multiselect("Runs", run_ids, default=run_ids, format_func=run_names.get, key="study_runs")
                st.multiselect("Rounds", round_numbers, default=round_numbers, format_func=round_names.get,
                               key="study_rounds", help="Round numbers count within each run.")
                st.segmented_control("Strata", list(STRATA), format_func=STRATA.get, default="none",
                                     required=True, key="study_stratify",
                                     help="Stratified: each round (or classification and other tasks) "
                                          "gets a share of the sample proportional to its size.")
                judged_runs = [r["id"] for r in pool.judge.runs() if r["scope"] == "pool"]
                if judged_runs:
                    st.selectbox("Draw from", [None, *judged_runs], key="study_judge_run",
                                 format_func=lambda r: "The pool (one random kept instance each)" if r is None
                                 else f"The items judge run {r} judged (the instance it judged)",
                                 help="Pool-wide rates that combine a judge run with people's labels need a "
                                      "study drawn from the very items that run judged.")
                create = st.form_submit_button("Draw the sample", key="study_create", type="primary",
                                               icon=":material/casino:")
            if create:
                chosen_runs = st.session_state["study_runs"]
                chosen_rounds = st.session_state["study_rounds"]
                stratify = st.session_state["study_stratify"]
                try:
                    created = quality.create_study(
                        pool, st.session_state["study_name"], size=int(st.session_state["study_size"]),
                        seed=int(st.session_state["study_seed"]),
                        run_ids=None if set(chosen_runs) == set(run_ids) else chosen_runs,
                        rounds=None if set(chosen_rounds) == set(round_numbers) else chosen_rounds,
                        stratify=None if stratify == "none" else stratify, actor=annotator or current_user(),
                        overlap=int(st.session_state["study_overlap"]),
                        judge_run=st.session_state.get("study_judge_run"))
                except (PoolError, ValueError) as exc:  # nothing eligible, no name: plain words
                    st.error(escape_markdown(str(exc)), icon=":material/error:")
                else:
                    st.session_state["label_study_pending"] = created.study_id
                    st.session_state["label_study_flash"] = (created.message(), created.sample.short)
                    st.rerun()

if not studies:
    st.stop()

by_id = {s["id"]: s for s in studies}
pick, switch = st.columns([3, 2], vertical_alignment="bottom")
study_id = pick.selectbox(
    "Study", list(by_id), key="label_study",
    format_func=lambda i: f"{by_id[i]['name']} ({by_id[i]['items']} items, created "
                          f"{by_id[i]['created_at']:%Y-%m-%d %H:%M})")
study = by_id[study_id]
st.session_state["label_view"] = (st.session_state.pop("label_view_pending", None)
                                  or st.session_state.get("label_view") or "label")
# Annotators see only their own queue: others' labels and the running results would bias
# the independent judgments that overlap and agreement rely on.
views = list(VIEWS) if allowed("study") else ["label"]
if st.session_state["label_view"] not in views:
    st.session_state["label_view"] = "label"
view = switch.segmented_control("View", views, format_func=VIEWS.get, required=True,
                                key="label_view", label_visibility="collapsed")
st.caption(quality.describe_study(study))


# -- label ---------------------------------------------------------------------------
def _text_block(text: str) -> None:
    # Plain text (never markdown): line breaks kept, long lines wrapped, long text scrolls.
    rows = text.count("\n") + 1 + len(text) // 90
    st.code(text, language=None, wrap_lines=True, height=280 if rows > 14 else "content")


def _keys(item_id: int) -> dict:
    return {**{q: f"lab_{q}_{item_id}" for q in QUESTIONS}, "note": f"lab_note_{item_id}"}


def _on_screen(pos_key: str) -> dict:
    """The item at this annotator's position when a key is handled, not when its button was
    drawn: a key typed while the page was still drawing belongs to the item the annotator has
    moved on to (keys queue in the order typed; a binding made at drawing time sent typed-ahead
    answers to the item just saved, or lost them)."""
    position = min(max(int(st.session_state[pos_key]), 0), int(study["items"]) - 1)
    return pool.quality.study_item(study_id, position, annotator)


def _answer(pos_key: str, question: str, answer: str) -> None:
    st.session_state[_keys(_on_screen(pos_key)["item_id"])[question]] = answer


def _go(pos_key: str, jump_key: str, position: int) -> None:
    st.session_state[pos_key] = position


def _save(pos_key: str, jump_key: str, all_yes: bool = False) -> None:
    item = _on_screen(pos_key)
    keys = _keys(item["item_id"])
    answers = {q: "yes" if all_yes else st.session_state.get(keys[q]) for q in QUESTIONS}
    if missing := [q for q, a in answers.items() if a is None]:
        st.session_state["label_flash"] = ("warning", f"Item {item['position'] + 1} is not saved: answer "
                                           + " and ".join(f"\"{QUESTION_TEXT[q]}\" (keys "
                                                          f"{' '.join(ANSWER_KEYS[q].values())})" for q in missing)
                                           + " first, then save again. \"Unsure\" is an answer.")
        return
    pool.quality.save_label(study_id, item["item_id"], annotator, note=st.session_state.get(keys["note"]),
                    **answers)
    for key in keys.values():  # the next visit shows what was saved
        st.session_state.pop(key, None)
    st.session_state["label_flash"] = ("success", f"Saved item {item['position'] + 1}.")
    # Next in this annotator's queue, read and held now: others' labels and the items on their
    # screens may have taken items out of it.
    following = quality.claim_next(pool, study_id, annotator, after=item["position"])
    if following is None:
        progress = pool.quality.study_progress(study_id, annotator)
        st.session_state["label_flash"] = ("info" if progress["held"] else "success",
                                           f"Saved item {item['position'] + 1}. {_nothing_free(progress)}")
        following = item["position"]
    _go(pos_key, jump_key, following)


def _nothing_free(progress: dict) -> str:
    return quality.nothing_free(progress, int(study.get("overlap") or 1))


def _first_unlabeled(pos_key: str, jump_key: str) -> None:
    first = quality.claim_next(pool, study_id, annotator)
    if first is None:
        st.session_state["label_flash"] = ("info", _nothing_free(pool.quality.study_progress(study_id, annotator)))
    else:
        _go(pos_key, jump_key, first)


def _jump(pos_key: str, box_key: str, shown: int) -> None:
    # A box still on a browser that has not drawn the last move yet comes back unchanged: only
    # a number the person typed moves them.
    if int(st.session_state[box_key]) - 1 != shown:
        st.session_state[pos_key] = int(st.session_state[box_key]) - 1


KEY_ANSWERS = {key: (question, answer) for question, keys in ANSWER_KEYS.items() for answer, key in keys.items()}


def _typed(key: str, pos_key: str, jump_key: str) -> None:
    """One key from the page's queue, handled as its button would be, on the item on screen now."""
    position = int(st.session_state[pos_key])
    if key in KEY_ANSWERS:
        _answer(pos_key, *KEY_ANSWERS[key])
    elif key in ("ctrl+s", "y"):
        _save(pos_key, jump_key, all_yes=key == "y")
    elif key == "p" and position > 0:
        _go(pos_key, jump_key, position - 1)
    elif key == "n" and position < int(study["items"]) - 1:
        _go(pos_key, jump_key, position + 1)
    elif key == "u":
        _first_unlabeled(pos_key, jump_key)


@st.fragment
def labeling() -> None:
    # A fragment: saving or moving reruns only this part of the page.
    n_items = int(study["items"])
    pos_key, jump_key = f"label_pos_{study_id}_{annotator}", f"label_jump_{study_id}"
    if pos_key not in st.session_state:  # resume at this annotator's queue, on an item nobody else has open
        start = quality.claim_next(pool, study_id, annotator)
        if start is None:
            start = pool.quality.study_progress(study_id, annotator)["first_unlabeled"] or 0
        _go(pos_key, jump_key, start)
    # Keys typed while the page was busy are handled first, in order (pages/keyqueue.py).
    key_queue("label_keys", f"{study_id}:{annotator}", [*KEY_ANSWERS, "ctrl+s", "y", "p", "n", "u"],
              lambda key: _typed(key, pos_key, jump_key))
    position = min(max(int(st.session_state[pos_key]), 0), n_items - 1)
    # The item on screen is held for this annotator (renewed on every rerun, released by a move).
    held_until = pool.quality.hold_item(study_id, position, annotator, seconds=quality.LABEL_LEASE_S)
    progress = pool.quality.study_progress(study_id, annotator)
    queue = progress["queue_positions"]
    item = pool.quality.study_item(study_id, position, annotator)

    head, bar, jump = st.columns([2, 3, 1], vertical_alignment="bottom")
    head.subheader(f"Item {position + 1} of {n_items}")
    # This annotator's share: what they labeled and what still waits for them (others' labels
    # shrink it), so each person on a team sees their own bar.
    share = progress["labeled"] + progress["queue"]
    bar.progress(progress["labeled"] / share if share else 1.0,
                 text=f"{progress['labeled']} of {share} items labeled by {escape_markdown(annotator)}"
                      + (f" · {progress['held']} on other annotators' screens" if progress["held"] else ""))
    # A box of its own per item, never written by the server: a box the server moved on came back
    # from a browser that had not drawn the move yet as a "change", and jumped back.
    box_key = f"{jump_key}_{position}"
    jump.number_input("Go to item", min_value=1, max_value=n_items, value=position + 1, step=1, key=box_key,
                      on_change=_jump, args=(pos_key, box_key, position))
    if flash := st.session_state.pop("label_flash", None):
        kind, message = flash
        if kind == "success":
            st.toast(message, icon=":material/check:")
        else:
            getattr(st, kind)(message)
    elif held_until is None and not queue and progress["held"]:
        st.info(_nothing_free(progress), icon=":material/hourglass_empty:")
    facts = [f"round {item['round']}" if item["round"] is not None else "no round",
             "classification task" if item["is_classification"] else "not a classification task",
             f"candidate {item['candidate_id']}"]
    if item["candidate_status"] != "accepted":
        facts.append(f"now {item['candidate_status']} in the pool")
    if item["labeled_at"] is not None:
        facts.append(f"you labeled it {item['labeled_at']:%Y-%m-%d %H:%M}")
    elif held_until is not None:
        facts.append(f"held for you until {held_until:%H:%M} UTC")
    elif position not in queue:
        facts.append("not in your queue: it has its labels, or other annotators have it on their screens")
    st.caption(" · ".join(facts))

    texts, answers = st.columns([3, 2], gap="large")
    with texts:
        st.markdown("**Instruction**")
        _text_block(item["instruction"])
        if item["input"] is None:
            st.warning("The sampled instance is no longer in the pool (its instances were regenerated). "
                       "Judge the instruction, and answer the other two questions \"Unsure\".")
        else:
            st.markdown("**Input**")
            if item["input"].strip():
                _text_block(item["input"])
            else:
                st.caption("Empty: this instance has no input.")
            st.markdown("**Output**")
            _text_block(item["output"])

    keys = _keys(item["item_id"])
    # The answers live in session state under keys[question], this item's saved answer until a
    # button (or its key) changes it; answers not saved are dropped on moving to another item.
    shown = st.session_state.get("label_answers_item")
    if shown != item["item_id"]:
        if shown is not None:
            for question in QUESTIONS:
                st.session_state.pop(_keys(shown)[question], None)
        st.session_state["label_answers_item"] = item["item_id"]
    with answers:
        for question in QUESTIONS:
            chosen = st.session_state.setdefault(keys[question], item[question])
            st.markdown(QUESTION_TEXT[question])
            with st.container(horizontal=True, key=f"label_answers_{question}"):
                for answer in ANSWERS:
                    key = ANSWER_KEYS[question][answer]
                    st.button(answer.capitalize(), key=f"label_{question}_{answer}", shortcut=key,
                              type="primary" if chosen == answer else "secondary",
                              help=f"Key {key}: \"{answer}\" to \"{QUESTION_TEXT[question]}\"",
                              on_click=_answer, args=(pos_key, question, answer))
            if question == "input_ok" and item["input"] is not None and not item["input"].strip():
                st.caption("The input is empty. That is appropriate when the instruction needs no "
                           "input; answer no if it needed one.")
        st.text_input("Note (optional)", value=item["note"] or "", key=keys["note"],
                      placeholder="Why, for the record or for a disagreement")
        args = (pos_key, jump_key)
        with st.container(horizontal=True):
            st.button("Save and next", key="label_save", type="primary", icon=":material/done:",
                      shortcut="Ctrl+S", on_click=_save, args=args)
            st.button("All yes, save and next", key="label_all_yes", icon=":material/done_all:",
                      shortcut="Y", on_click=_save, args=args, kwargs={"all_yes": True})
        with st.container(horizontal=True):
            st.button("Previous", key="label_prev", icon=":material/chevron_left:", shortcut="P",
                      disabled=position == 0, on_click=_go, args=(pos_key, jump_key, position - 1))
            st.button("Next", key="label_next", icon=":material/chevron_right:", shortcut="N",
                      disabled=position >= n_items - 1, on_click=_go,
                      args=(pos_key, jump_key, position + 1))
            st.button("First in your queue", key="label_first_unlabeled", icon=":material/skip_next:",
                      shortcut="U", disabled=not queue and not progress["held"],
                      on_click=_first_unlabeled,
                      args=(pos_key, jump_key))
        st.caption("Keys: 1 2 3 answer the first question yes / no / unsure, 4 5 6 the second, "
                   "7 8 9 the third; Ctrl+S saves and moves on; Y answers yes to all three and moves "
                   "on; P / N go to the previous / next item without saving, U to the first item in "
                   "your queue (items you have not labeled that still need a label).")


# -- results -------------------------------------------------------------------------
def _pct(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.0%}"


def numbers_table(frame: pd.DataFrame, group_title: str | None = None) -> None:
    # every percentage on the page in one form (_pct: "17%"), never "16.67%" beside "25%"
    shown = frame.assign(
        interval=[f"{_pct(lo)} – {_pct(hi)}" if pd.notna(lo) else "n/a" for lo, hi in zip(frame["low"], frame["high"])],
        share=frame["share"].map(_pct), paper=frame["paper"].map(_pct))
    columns = (["group"] if group_title else []) + ["label", "yes", "n", "share", "interval", "no", "unsure",
                                                    "split", "paper"]
    st.dataframe(shown[columns], hide_index=True, column_config={
        "group": st.column_config.TextColumn(group_title),
        "label": st.column_config.TextColumn("Question"),
        "share": st.column_config.TextColumn("Share yes"),
        "interval": st.column_config.TextColumn("95% Wilson interval"),
        "split": st.column_config.NumberColumn("no majority", help="Annotators split with no majority"),
        "paper": st.column_config.TextColumn("Paper"),
    })


def team_progress() -> None:
    team = pool.quality.study_team_progress(study_id)
    k = team["overlap"]
    st.subheader("Team progress")
    st.progress(team["complete"] / team["items"] if team["items"] else 1.0,
                text=f"{team['complete']} of {team['items']} items have "
                     + ("a label" if k == 1 else f"their {k} labels")
                     + (f"; {team['labels_needed']} label(s) still to give" if team["labels_needed"] else ""))
    st.dataframe(
        pd.DataFrame([{**a, "share": a["labels"] / (a["labels"] + a["queue"]) if a["labels"] + a["queue"] else 1.0}
                      for a in team["annotators"]],
                     columns=["annotator", "labels", "queue", "share", "last_label"]),
        hide_index=True, key="label_team_progress",
        column_config={"annotator": "Annotator", "labels": "Labeled",
                       "queue": st.column_config.NumberColumn("Left in their queue"),
                       "share": st.column_config.ProgressColumn("Progress", min_value=0, max_value=1,
                                                                format="percent"),
                       "last_label": st.column_config.DatetimeColumn("Last label", format="YYYY-MM-DD HH:mm")})
    if leases := pool.quality.study_leases(study_id):
        st.caption("On screens now: " + ", ".join(
            f"item {lease['position'] + 1} ({escape_markdown(lease['annotator'])}, until "
            f"{lease['expires_at']:%H:%M} UTC)" for lease in leases)
            + ". An open item counts toward its labels in everyone else's queue until it is saved, "
              "skipped or its hold ends.")
    # agreement so far is the one table under "Agreement between annotators"


def agreement_table(rows: list[dict], items_title: str) -> None:
    """One table of agreement per question (quality.agreement or overlap_agreement rows)."""
    st.dataframe(pd.DataFrame(rows).assign(
        observed=lambda f: f["observed"].map(_pct),
        kappa=lambda f: f["kappa"].map(lambda v: "n/a" if v is None or pd.isna(v) else f"{v:.2f}"),
        why_undefined=lambda f: f["why_undefined"].fillna("")),
        hide_index=True, key="label_agreement",
        column_order=["label", "method", "items", "observed", "kappa", "reading", "why_undefined"],
        column_config={"label": "Question", "method": "Method", "items": items_title,
                       "observed": "Agreed on", "kappa": "Kappa", "reading": "Reading", "why_undefined": "Why n/a"})


def results() -> None:
    labels = pool.quality.study_labels(study_id)
    if not labels:
        st.info("No labels yet. Label a few items and the results appear here.", icon=":material/info:")
        return
    annotators = sorted({row["annotator"] for row in labels})
    whose_options = [""] + annotators if len(annotators) > 1 else annotators
    whose = st.selectbox("Whose answers", whose_options, key="label_whose",
                         format_func=lambda a: a or "Everyone: the majority answer per item")
    result = quality.study_results(pool, study_id, whose or None, labels=labels)
    overall = result.overall.set_index("measure")

    st.subheader(f"{result.labeled} of {result.items} items labeled")
    if result.note:
        st.caption(f"Overall figures: {result.note}.")
    st.caption(SEVERAL_STUDIES_RULE)
    st.caption("Each figure is a 95% Wilson interval: where the share of yes most likely lies among all "
               "the instructions this study was drawn from. Under it, the share in this sample and how "
               "it compares with the paper.")
    for column, measure in zip(st.columns(4), quality.MEASURES):
        row = overall.loc[measure]
        yes, n = int(row["yes"]), int(row["n"])
        column.metric(MEASURE_LABELS[measure], f"{_pct(row['low'])} – {_pct(row['high'])}",
                      delta=f"{_pct(row['share'])} yes ({yes} of {n})", delta_color="off", delta_arrow="off",
                      help=f"The 95% Wilson interval, from {yes} yes of {n} labeled. The paper: "
                           f"{row['paper']:.0%}.")
        column.caption(quality.compare_with_paper(yes, n, row["paper"]))
    st.altair_chart(charts.yes_rates(result.overall), key="label_rates_chart")
    unsure = int(overall.loc[list(QUESTIONS), "unsure"].sum())
    split = int(overall.loc[list(QUESTIONS), "split"].sum())
    st.caption(
        "Bars: share of yes in this study, with its 95% Wilson interval; ticks: the paper's figure. "
        f"\"Unsure\" counts as not yes ({unsure} unsure answer(s) here"
        + (f"; {split} answer(s) without a majority among annotators" if split else "")
        + "). \"All three valid\" needs yes to every question.")

    by_round, by_group = st.columns(2)
    with by_round:
        st.markdown("**By round**")
        st.altair_chart(charts.yes_rates_by_group(result.by_round, "Round"), key="label_round_chart")
    with by_group:
        st.markdown("**Classification vs not**")
        st.altair_chart(charts.yes_rates_by_group(result.by_group, "Task kind"), key="label_group_chart")
    with st.expander("The numbers", icon=":material/table:"):
        numbers_table(result.overall)
        numbers_table(result.by_round, "Round")
        numbers_table(result.by_group, "Task kind")

    if allowed("study"):   # who labels how much is the owners' view of the team
        team_progress()

    st.subheader("Agreement between annotators")
    if len(annotators) < 2:
        st.caption("Agreement needs two or more annotators on the same items. Ask a colleague to "
                   "label this study under their own name.")
        return
    chosen = st.multiselect("Annotators", annotators, default=annotators, key="label_agree_with")
    k = pool.quality.study_team_progress(study_id)["overlap"]
    # Everyone, in a study where each item gets k labels from whoever had it: the items with k
    # labels, whoever gave them (the team's agreement so far); a chosen few: their shared items.
    whole_team = set(chosen) == set(annotators) and k >= 2
    kappas = quality.overlap_agreement(labels, k) if whole_team else quality.agreement(labels, chosen)
    if kappas:
        agreement_table(kappas, f"Items with {k} labels" if whole_team else "Items compared")
        st.caption((f"Fleiss' kappa over the items that have their {k} labels (each item's first {k} "
                    "annotators by name), so it grows as the team labels" if whole_team else
                    "Cohen's kappa for two annotators (items both labeled), Fleiss' kappa for more "
                    "(items all of them labeled)")
                   + ": agreement beyond what chance would give, 1 perfect, 0 no better than chance. "
                     "Readings follow Landis and Koch (1977).")
    else:
        st.caption("Choose two or more annotators.")
    found = quality.disagreements(labels, chosen)
    if not found:
        st.success("No disagreements to resolve.", icon=":material/handshake:")
        return
    texts = pool.quality.study_texts(study_id, [row["item_id"] for row in found])
    table = pd.DataFrame([{**row, "instruction": texts[row["item_id"]]["instruction"]} for row in found])
    st.markdown(f"**{len(found)} item(s) with a disagreement to resolve**")
    picked = st.dataframe(
        table, hide_index=True, key="label_disagreements", on_select="rerun", selection_mode="single-row",
        column_order=["item", *QUESTIONS, "instruction"],
        column_config={"item": st.column_config.NumberColumn("Item", width="small"),
                       **{q: MEASURE_LABELS[q] for q in QUESTIONS}})
    rows = picked.selection.rows if picked is not None else []
    if st.button("Open the selected item", key="label_open_disagreement", icon=":material/open_in_new:",
                 disabled=not rows):
        position = int(table.iloc[rows[0]]["position"])
        st.session_state[f"label_pos_{study_id}_{annotator}"] = position
        st.session_state["label_view_pending"] = "label"
        st.rerun()


# -- study data ----------------------------------------------------------------------
def study_data() -> None:
    rows = quality.study_rows(pool, study_id)
    st.dataframe(render.table(pd.DataFrame(rows, columns=quality.STUDY_COLUMNS), [*QUESTIONS, "note", "input"]),
                 hide_index=True, key="label_study_rows",
                 column_order=["item", "annotator", *QUESTIONS, "note", "instruction", "input", "output",
                               "round", "is_classification", "candidate_id", "instance_id", "labeled_at"],
                 column_config={"item": st.column_config.NumberColumn("Item", width="small"),
                                **{q: MEASURE_LABELS[q] for q in QUESTIONS},
                                "is_classification": st.column_config.CheckboxColumn("classification")})
    slug = "".join(ch if ch.isalnum() else "-" for ch in study["name"].lower()).strip("-") or "study"
    csv_col, json_col = st.columns(2)
    csv_col.download_button("Download CSV", quality.study_csv(pool, study_id), file_name=f"{slug}.csv",
                            mime="text/csv", key="label_download_csv", icon=":material/download:",
                            on_click="ignore")
    json_col.download_button("Download JSON", quality.study_json(pool, study_id), file_name=f"{slug}.json",
                             mime="application/json", key="label_download_json", icon=":material/download:",
                             on_click="ignore")
    st.caption("One row per item and annotator; an item nobody labeled has one row with empty answers. "
               "The JSON holds the study, its settings, its annotators and every item with its labels.")
    labeled, invalid = pool.quality.labeled_candidate_ids(), pool.quality.invalid_candidate_ids()
    st.info(f"Across all studies, {len(labeled)} instruction(s) in the pool carry a label; "
            f"{len(invalid)} of them judged not a valid task by most of their annotators. "
            "Exports can leave those out. " + SEVERAL_STUDIES_RULE, icon=":material/label:")


if view != "label" and annotator:
    pool.quality.release_lease(study_id, annotator)   # not labeling now: the held item goes back to the team
if view == "label":
    if not annotator:
        ask_for_name("labeling")
    else:
        labeling()
elif view == "results":
    results()
else:
    study_data()
