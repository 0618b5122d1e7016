"""The Image browser page (see ``app/routes``)."""

from app.screens import images

images.page()
