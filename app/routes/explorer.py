"""The Confidence explorer page (see ``app/routes``)."""

from app.screens import explorer

explorer.page()
