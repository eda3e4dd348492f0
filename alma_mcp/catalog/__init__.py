"""Catalogues of data shipped under resources/: blueprint templates."""
