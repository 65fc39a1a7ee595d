"""Topics: the whole pool on one map, a table per topic, and actions on a whole topic."""
import math

import pandas as pd
import streamlit as st

from pages.common import act_and_rerun, allowed, current_pool, current_user, require, show_flash
from selfinstruct import actions, charts, topics
from selfinstruct.render import escape_markdown

PAGE_SIZE = 50
STATES = {None: "Any status", "seed": "Seed tasks", "accepted": "Accepted", "rescued": "Rescued",
          "rejected": "Rejected"}
ACTION_LABELS = {actions.REMOVE_TOPIC: "removed the items of", actions.APPROVE_TOPIC: "approved all of",
                 actions.MARK_TOPIC: "marked \"avoid\"", actions.UNMARK_TOPIC: "lifted \"avoid\" from"}

pool = current_pool()
user = current_user()
can_edit = allowed("edit")

st.title("Topics")
st.caption("Clusters of the pool's instructions by meaning (embeddings, k-means), named by their most "
           "frequent leading verb and noun and their most distinctive words. Seed tasks and accepted "
           "instructions define the topics; rejected candidates are placed in their nearest topic.")


def act(fn, *args, done, **kwargs) -> None:
    act_and_rerun(pool, fn, *args, actor=user, flash_key="topics_flash", done=done, **kwargs)


show_flash("topics_flash")

with st.expander("Settings", expanded=False):
    auto = st.toggle("Choose the number of topics automatically", value=True, key="topics_auto",
                     help="Tries 4 to 30 topics on a sample and keeps the smallest number whose "
                          "silhouette is within 5% of the best.")
    k = None if auto else st.number_input("Number of topics", 2, 200, 12, key="topics_k")
settings = topics.TopicSettings(k=None if k is None else int(k))

now = topics.current(pool, settings)


def compute() -> None:
    require("edit")
    bar = st.progress(0.0, text="Embedding the instructions that have no vector yet...")
    try:
        topics.compute(pool, settings, progress=lambda done, total: bar.progress(
            done / total if total else 1.0, text=f"Embedding {done:,} of {total:,} instructions..."))
    except Exception as exc:  # noqa: BLE001 - the embedder's own words, shown as text
        bar.empty()
        st.error("The topics could not be computed. The embedder said:")
        st.code(str(exc), language=None)
        st.stop()
    st.rerun()


if now.set is None:
    st.info("No topics yet for these settings. Computing them takes a few seconds (about 20 s for "
            "50,000 instructions).", icon=":material/bubble_chart:")
    if can_edit and st.button("Compute topics", key="topics_compute", type="primary"):
        compute()
    st.stop()

current = now.set
set_id = int(current["id"])
head, refresh_col = st.columns([5, 1])
head.markdown(f"**{current['k']}** topics over **{current['fitted']:,}** seed tasks and accepted instructions "
              f"(and {current['items'] - current['fitted']:,} rejected candidates placed in them), "
              f"computed {current['created_at']:%Y-%m-%d %H:%M} in {current['seconds'] or 0:.1f} s.")
if now.stale:
    head.warning(f"The pool changed since these topics were computed ({now.grown:+,} instructions). "
                 "Refresh to see the topics of the pool as it is now.", icon=":material/update:")
if can_edit and refresh_col.button("Refresh", key="topics_refresh", disabled=not now.stale,
                                   help="Compute the topics again from the pool as it is now."):
    compute()

@st.cache_data(max_entries=8, show_spinner=False)
def _view(db_path: str, set_id: int, state: str):
    """The table and the map's points of a set, once per state of what they show."""
    return topics.topic_rows(pool, set_id), topics.map_frame(pool, set_id)


rows, points = _view(str(pool.path), set_id, pool.topics.view_state())
table = pd.DataFrame(rows)

# ---------------------------------------------------------------------------- the map
color_by = st.segmented_control("Colour by", list(charts.TOPIC_COLORINGS), default="topic", required=True,
                                format_func=charts.TOPIC_COLORINGS.get, key="topics_color")
if current["items"] > len(points):
    st.caption(f"The map draws a fixed random sample of {len(points):,} of the {current['items']:,} items; "
               "search below reaches every one.")
st.altair_chart(charts.topic_map(points, color_by), width="stretch")

# ---------------------------------------------------------------------------- the table
st.subheader("Per topic")
shown = table.assign(
    rounds=table["rounds"].map(topics.rounds_text),
    invalid=[None if r["invalid_share"] is None else
             f"{r['invalid_share']:.0%} ({r['invalid_low']:.0%}-{r['invalid_high']:.0%}, n={r['labeled']})"
             for r in rows],
    judge=[None if r["judge_no_share"] is None else f"{r['judge_no_share']:.0%} of {r['judged']}" for r in rows],
    avoid=table["avoid"].map(lambda a: "avoid" if a else ""))
event = st.dataframe(
    shown, key="topics_table", on_select="rerun", selection_mode="single-row", hide_index=True,
    column_order=["topic", "name", "size", "seed_share", "acceptance", "rescue", "invalid", "judge", "rounds",
                  "avoid"],
    column_config={
        "topic": st.column_config.NumberColumn("#", width="small"),
        "name": st.column_config.TextColumn("name", width="large"),
        "size": st.column_config.NumberColumn("size", help="Seed tasks and accepted instructions."),
        "seed_share": st.column_config.NumberColumn("seeds", format="percent", help="Share of seed tasks."),
        "acceptance": st.column_config.NumberColumn("accepted", format="percent",
                                                    help="Of the candidates placed here, the share accepted."),
        "rescue": st.column_config.NumberColumn("rescued", format="percent",
                                                help="Of the candidates the filters rejected, the share a person rescued."),
        "invalid": st.column_config.TextColumn("labeled invalid", help="Share of the labeled items people called "
                                               "not a valid task (majority rule), with its 95% Wilson interval."),
        "judge": st.column_config.TextColumn("judge \"no\"", help="Share of the judged items whose latest verdict "
                                             "says not a valid task."),
        "rounds": st.column_config.TextColumn("rounds", help="Rounds whose accepted instructions are here."),
        "avoid": st.column_config.TextColumn("mark", width="small"),
    })
picked = event.selection.rows if event is not None else []
topic = int(table.iloc[picked[0]]["topic"]) if picked else None

# ---------------------------------------------------------------------------- items (a topic, or all)
# A name may come from a model: its text is escaped, never read as markdown.
st.subheader(f"Topic {topic}: {escape_markdown(rows[topic - 1]['name'])}" if topic else "Find an item")
if topic is None:
    st.caption("Select a topic in the table to open it, or search every item here.")
search_col, state_col = st.columns([3, 1])
search = search_col.text_input("Search items", key="topics_search", placeholder="words in the instruction")
state = state_col.selectbox("Status", list(STATES), format_func=STATES.get, key="topics_state")
total, _ = pool.topics.topic_items(set_id, topic, search=search, state=state, limit=0)
st.markdown(f"**{total:,}** item(s)")
if topic is not None or search or state:      # the whole pool's list waits for a question
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = st.number_input(f"Page (of {pages:,})", 1, pages, 1, key=f"topics_page_{topic}_{search}_{state}")
    _, items = pool.topics.topic_items(set_id, topic, search=search, state=state, limit=PAGE_SIZE,
                                       offset=(int(page) - 1) * PAGE_SIZE)
    st.dataframe(pd.DataFrame(items, columns=["kind", "item_id", "topic", "state", "round", "instruction", "reason",
                                              "review"]),
                 hide_index=True, column_config={"instruction": st.column_config.TextColumn(width="large")})

# ---------------------------------------------------------------------------- whole-topic actions
if topic is not None and can_edit:
    row = rows[topic - 1]
    st.markdown("**Act on the whole topic**")
    c1, c2, c3 = st.columns(3)
    with c1:
        seeds_too = st.checkbox(f"Also delete its {row['seeds']} seed task(s)", key="topics_seeds_too",
                                disabled=row["seeds"] == 0)
        if st.button("Remove all", key="topics_remove", icon=":material/delete:"):
            act(actions.remove_topic, set_id, topic, include_seeds=seeds_too,
                done=lambda o: f"Removed {o.count} item(s) of topic {topic}. Undo below if that was a mistake.")
    with c2:
        st.caption("Recorded as a bulk approval, kept apart from approving items one by one.")
        if st.button("Approve all", key="topics_approve", icon=":material/done_all:"):
            act(actions.approve_topic, set_id, topic, done=lambda o: f"Approved {o.count} item(s) in bulk.")
    with c3:
        st.caption("Steered generation never takes examples from a topic marked \"avoid\".")
        if row["avoid"]:
            if st.button("Lift \"avoid\"", key="topics_unmark"):
                act(actions.unmark_topic, set_id, topic, done="The topic is no longer avoided.")
        elif st.button("Mark \"avoid\"", key="topics_mark", icon=":material/block:"):
            act(actions.mark_topic, set_id, topic, done="Marked topic " + str(topic) + " \"avoid\".")

if can_edit:
    recent = actions.history(pool, actions.TOPIC_ACTIONS, limit=5)
    if recent:
        st.markdown("**Recent topic actions**")
        for entry in recent:
            col_text, col_undo = st.columns([5, 1])
            verb = ACTION_LABELS.get(entry["action"], entry["action"])
            col_text.text(f"{entry['created_at']:%H:%M} {entry['actor']} {verb} {entry['items']} item(s)"
                          + ("" if entry["open"] else " (undone)"))
            if entry["open"] and entry["action"] != actions.UNDO and col_undo.button(
                    "Undo", key=f"topics_undo_{entry['batch']}"):
                act(actions.undo_batch, entry["batch"], done="Undone.")
