"""embtune studio: ``embtune studio`` runs ``streamlit run`` on this file.

Navigation only: each page is one file under ``pages/``; what they share is in ``widgets.py``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"
# A file of the app's own: an emoji or icon name as favicon makes the page fetch it from the internet.
FAVICON = Path(__file__).resolve().parent / "favicon.png"

st.set_page_config(page_title="embtune studio", page_icon=str(FAVICON), layout="wide")
navigation = st.navigation([
    st.Page(PAGES / "data.py", title="Data", icon=":material/database:", default=True),
    st.Page(PAGES / "label.py", title="Label", icon=":material/label:"),
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:"),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES / "map.py", title="Map", icon=":material/scatter_plot:"),
])
st.sidebar.caption("embtune studio — adapt an embedding model and prove the gain")
navigation.run()
