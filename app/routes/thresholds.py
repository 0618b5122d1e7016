"""The Thresholds page (see ``app/routes``)."""

from app.screens import thresholds

thresholds.page()
