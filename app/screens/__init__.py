"""The app's pages, one module each, every one exposing ``page()``: the screen a page file of ``app/routes`` runs."""
