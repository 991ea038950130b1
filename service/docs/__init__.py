"""The service's pages for people: the front page, the error catalogue (/problems) and the
interactive docs (Swagger UI at /docs, ReDoc at /redoc), all served by this process from assets
in pinned packages, so they work offline and always match the running version."""

from __future__ import annotations

from fastapi import FastAPI

from service.docs import interactive, pages
from service.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    pages.install(app)
    if settings.docs_enabled:
        interactive.install(app)
