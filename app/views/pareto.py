"""The pareto page (its code: app/page_pareto.py)."""

from page_pareto import page

page()
