"""selfinstruct studio: the entry point. Run with `streamlit run app.py`."""
import streamlit as st

from pages.common import navigation_ready, pool_sidebar

st.set_page_config(page_title="selfinstruct", page_icon=":material/auto_awesome:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/seed.py", title="Seed", icon=":material/spa:"),
    st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
    st.Page("pages/rejects.py", title="Rejects", icon=":material/filter_alt_off:"),
    st.Page("pages/pool.py", title="Pool", icon=":material/database:"),
    st.Page("pages/label.py", title="Label", icon=":material/fact_check:"),
    st.Page("pages/export.py", title="Export", icon=":material/ios_share:"),
]
navigation = st.navigation(pages)
navigation_ready()
pool_sidebar()
navigation.run()
