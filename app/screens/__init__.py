"""The app's pages, one module each, every one exposing ``page()``: the callable ``app/main.py`` registers with
``st.Page``. (Not named ``pages/``: a ``pages/`` folder beside the main script switches Streamlit to its old
file-based multipage mode on the first run.)"""
