"""selfinstruct studio: the entry point. Run with `streamlit run app.py`."""
import streamlit as st

from pages.common import pool_sidebar

st.set_page_config(page_title="selfinstruct", page_icon=":material/auto_awesome:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/seed.py", title="Seed", icon=":material/spa:"),
    st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
]
navigation = st.navigation(pages)
pool_sidebar()
navigation.run()
