"""The thresholds page (its code: app/page_thresholds.py)."""

from page_thresholds import page

page()
