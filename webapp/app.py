"""embtune studio: ``embtune studio`` runs ``streamlit run`` on this file.

Navigation only: each page is one file under ``pages/``; what they share is in ``widgets.py``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="embtune studio", page_icon="🔎", layout="wide")
navigation = st.navigation([
    st.Page(PAGES / "data.py", title="Data", icon="🗂️", default=True),
    st.Page(PAGES / "label.py", title="Label", icon="🏷️"),
    st.Page(PAGES / "train.py", title="Train", icon="🏋️"),
    st.Page(PAGES / "compare.py", title="Compare", icon="📊"),
    st.Page(PAGES / "map.py", title="Map", icon="🗺️"),
])
st.sidebar.caption("embtune studio — adapt an embedding model and prove the gain")
navigation.run()
