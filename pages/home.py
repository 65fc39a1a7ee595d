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
for column, (label, value) in zip(columns, [
    ("Seed tasks", counts.seeds), ("Accepted", counts.accepted), ("Rejected", counts.rejected),
    ("Instances", counts.instances), ("Rounds", counts.rounds), ("Labeled", counts.labeled),
]):
    column.metric(label, f"{value:,}")

st.subheader("What next")
if counts.seeds == 0:
    st.info("The pool has no seed tasks yet. Start on the Seed page: load the starter seeds "
            "or upload your own file.", icon=":material/spa:")
    st.page_link("pages/seed.py", label="Go to Seed", icon=":material/spa:")
else:
    st.success(f"{counts.seeds:,} seed tasks are ready. Review or edit them on the Seed page.",
               icon=":material/check_circle:")
    st.page_link("pages/seed.py", label="Review seeds", icon=":material/spa:")
