"""Imports every model module so the metadata is complete (for Alembic and tests)."""

from __future__ import annotations


def load_all_models() -> None:
    from service.api_keys import models as _api_keys  # noqa: F401
    from service.items import models as _items  # noqa: F401
    from service.users import models as _users  # noqa: F401
