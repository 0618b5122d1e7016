"""MESS Explorer, the Streamlit front end: ``main.py`` (the entry point, ``./mess.sh app``), ``common.py`` (the study
chooser and the cached heavy objects), ``screens/`` (one module per page, each a ``page()`` callable)."""
