"""The explorer page (its code: app/page_explorer.py)."""

from page_explorer import page

page()
