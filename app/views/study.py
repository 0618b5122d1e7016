"""The study page (its code: app/page_study.py)."""

from page_study import page

page()
