"""One error schema for every error: RFC 9457 problem+json with a stable machine `code`.

Domain code raises an `AppError` subclass; kit/error_handlers.py maps framework and driver
exceptions onto the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.kit.observability import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the bad value is, e.g. ['body', 'email']")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, plus `code` (stable, for machines) and `errors` (for 422)."""

    type: str = Field(description="A URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path")
    code: str = Field(description="Stable machine-readable code, e.g. user.email_taken")
    request_id: str | None = None
    errors: list[FieldError] | None = None


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class AppError(Exception):
    """An error with a known status, code and safe detail."""

    status: int = 500
    code: str = "internal"
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.code = code or self.code
        self.headers = dict(headers or {})


class Unauthorized(AppError):
    status, code, title = 401, "auth.unauthorized", "Unauthorized"


class Forbidden(AppError):
    status, code, title = 403, "auth.forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not Found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class UnprocessableContent(AppError):
    status, code, title = 422, "request.invalid_data", "Unprocessable Content"


class TooManyRequests(AppError):
    status, code, title = 429, "rate_limit.exceeded", "Too Many Requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service.unavailable", "Service Unavailable"


# Status -> (code, title) for errors raised by the framework rather than by our code.
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("request.malformed", "Bad Request"),
    401: ("auth.unauthorized", "Unauthorized"),
    403: ("auth.forbidden", "Forbidden"),
    404: ("route.not_found", "Not Found"),
    405: ("method.not_allowed", "Method Not Allowed"),
    413: ("request.too_large", "Content Too Large"),
    415: ("request.unsupported_media_type", "Unsupported Media Type"),
}

# Constraint name -> (code, detail). Domains register their unique constraints here so a
# violation found at flush or commit time becomes a precise 409.
CONSTRAINTS: dict[str, tuple[str, str]] = {}


def invalid_field(loc: tuple[str | int, ...], msg: str, type_: str) -> RequestValidationError:
    """A 422 for a rule Pydantic cannot express (one that depends on runtime settings)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": type_}])


def register_constraint(name: str, code: str, detail: str) -> None:
    CONSTRAINTS[name] = (code, detail)


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body = Problem(
        type=f"urn:problem:{code}",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        code=code,
        request_id=current_request_id(),
        errors=errors,
    )
    return ProblemResponse(
        body.model_dump(exclude_none=True), status_code=status, headers=dict(headers or {})
    )
