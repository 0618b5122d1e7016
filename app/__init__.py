"""MESS Explorer, the Streamlit front end: ``main.py`` (the entry point, ``./mess.sh app``), ``routes/`` (the page
registry), ``screens/`` (one module per page, each a ``page()`` callable, laying out only), ``views/`` (the figures,
Streamlit-free), and what the pages share: ``figures.py`` (drawing), ``loaders.py`` (cached heavy objects),
``state.py`` (per-session choices), ``sidebar.py`` (the study chooser), ``consent.py`` (running a study's model
code), ``boundaries.py`` (error boundaries), ``settings.py`` (where things are) and ``heap.py`` (the GC freeze)."""
