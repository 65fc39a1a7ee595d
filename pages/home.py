import streamlit as st

from pages.common import current_pool

pool = current_pool()
counts = pool.counts()

st.title("selfinstruct")
st.write(
    "Bootstrap an instruction-tuning dataset from a few hundred hand-written tasks, "
    "the Self-Instruct way: a model proposes new tasks round by round, filters keep the "
    "novel and well-formed ones, and you review, rescue, label and export."
)

columns = st.columns(6)
for column, (label, value, why) in zip(columns, [
    ("Seed tasks", counts.seeds, None), ("Accepted", counts.accepted, "Generated instructions in the pool"),
    ("Rejected", counts.rejected, None),
    ("Instances", counts.instances, "Input/output pairs of the tasks in the pool (seeds and accepted "
                                    "instructions): what an export holds. Those of rejected or removed "
                                    "tasks are not counted."),
    ("Rounds done", counts.rounds, "Rounds whose requests are all answered and decided, in every run"), ("Labeled", counts.labeled, "Items labeled in quality studies"),
]):
    column.metric(label, f"{value:,}", help=why)

st.subheader("What next")
if counts.seeds == 0:
    st.info("The pool has no seed tasks yet. Start on the Seed page: load the starter seeds "
            "or upload your own file.", icon=":material/spa:")
    st.page_link("pages/seed.py", label="Go to Seed", icon=":material/spa:")
elif counts.runs == 0:
    st.success(f"{counts.seeds:,} seed tasks are ready. Start a run: the offline demo needs no "
               "API key.", icon=":material/check_circle:")
    st.page_link("pages/generate.py", label="Generate", icon=":material/auto_awesome:")
    st.page_link("pages/seed.py", label="Review seeds", icon=":material/spa:")
else:
    st.write(f"The pool holds {counts.seeds:,} seed tasks and {counts.accepted:,} generated instructions, "
             f"with {counts.instances:,} instances between them, after {counts.rounds:,} round(s) done; "
             f"{counts.rejected:,} candidates were rejected.")
    st.page_link("pages/generate.py", label="Watch or start runs", icon=":material/auto_awesome:")
    st.page_link("pages/rejects.py", label=f"Review the {counts.rejected:,} rejects and rescue what "
                 "the filters got wrong", icon=":material/filter_alt_off:")
    st.page_link("pages/pool.py", label="Browse the pool and its diversity", icon=":material/database:")
    st.page_link("pages/label.py", label="Hand-label a sample for quality", icon=":material/fact_check:")
    st.page_link("pages/export.py", label="Export a training set", icon=":material/ios_share:")
