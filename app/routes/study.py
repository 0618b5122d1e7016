"""The Study page (see ``app/routes``)."""

from app.screens import study

study.page()
