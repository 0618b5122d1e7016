"""The Drive page (see ``app/routes``)."""

from app.screens import drive

drive.page()
