"""The one pass every API request makes: client budget -> authentication -> every limit in
one Redis round trip -> the principal the route receives."""

from service.frontdoor.dependencies import (
    AdminUser,
    CurrentUser,
    client_budget,
    front_door,
    login_budget,
    require_admin,
    require_role,
    spend_password_attempt,
)

__all__ = [
    "AdminUser",
    "CurrentUser",
    "client_budget",
    "front_door",
    "login_budget",
    "require_admin",
    "require_role",
    "spend_password_attempt",
]
