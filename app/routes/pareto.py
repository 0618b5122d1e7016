"""The Pareto and search page (see ``app/routes``)."""

from app.screens import pareto

pareto.page()
