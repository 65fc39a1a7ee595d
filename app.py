"""selfinstruct studio: the entry point. Run with `streamlit run app.py`."""
import streamlit as st

from pages.common import gate, navigation_ready, pool_sidebar
from selfinstruct import access

st.set_page_config(page_title="selfinstruct", page_icon=":material/auto_awesome:", layout="wide")

# In team mode a visitor who is not logged in (or not on the team) stops here, before any pool
# is opened; everyone else gets a role.
role = gate()

PAGES = {  # name (as in selfinstruct.access.PAGES): title, icon
    "home": ("Home", ":material/home:"),
    "seed": ("Seed", ":material/spa:"),
    "generate": ("Generate", ":material/auto_awesome:"),
    "rejects": ("Rejects", ":material/filter_alt_off:"),
    "pool": ("Pool", ":material/database:"),
    "topics": ("Topics", ":material/bubble_chart:"),
    "label": ("Label", ":material/fact_check:"),
    "judge": ("Judge", ":material/gavel:"),
    "evaluate": ("Evaluate", ":material/leaderboard:"),
    "export": ("Export", ":material/ios_share:"),
}
# Only the role's pages are registered for this session: a page left out is neither in the
# sidebar nor reachable by its URL (Streamlit answers "page not found" and shows the landing).
landing = access.landing_page(role)
pages = [st.Page(f"pages/{name}.py", title=title, icon=icon, default=name == landing)
         for name, (title, icon) in PAGES.items() if name in access.pages_for(role)]
# The config hides the folder listing Streamlit shows before this line runs (see config.toml);
# the real navigation goes in the sidebar. A visitor the gate stopped never gets here.
st.set_option("client.showSidebarNavigation", True)
navigation = st.navigation(pages)
navigation_ready()
pool_sidebar()
navigation.run()
