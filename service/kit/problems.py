"""One error schema for every error: RFC 9457 problem+json with a stable machine `code`, and
the one catalogue of those codes.

Every code the service can answer with has an `ErrorCode` entry in `CATALOGUE` below: its
status, title, what it means, what the client should do, and an example. The problem bodies, the
OpenAPI document and the `/problems/{code}` pages (service/docs/) are all made from it, so a code
without an entry cannot ship: raising an `AppError`, registering a constraint or building a
problem with an unknown code fails at once (`UncataloguedCode`), and
tests/service/test_errors.py finds every `code="..."` in service/ and requires its entry.

A new code: add its `ErrorCode(...)` to `_CATALOGUE_ENTRIES` (status, title, meaning, action,
example detail and path), then raise it with the `AppError` subclass of that status
(`Conflict("...", code="x.y")`), `problem("x.y", detail)` in pure-ASGI code, or
`register_constraint(name, "x.y", detail)` for a unique constraint (409). Its page and its place
in the OpenAPI enum follow.

Domain code raises an `AppError` subclass; kit/error_handlers.py maps framework and driver
exceptions onto the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.kit.observability import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"

# A problem's `type` is a relative reference, "/problems/<code>", which RFC 9457 (3.1.1) resolves
# against the request's URI: it points at the very service (and version) that answered, works
# offline and behind any host name, and stays one stable string per code for clients that
# compare types, where an absolute URI would be built from a client-controlled Host header.
PROBLEM_TYPE_PREFIX = "/problems/"


class UncataloguedCode(LookupError):
    """An error code with no entry in CATALOGUE, or used with another status than its entry's."""


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the bad value is, e.g. ['body', 'email']")
    msg: str
    type: str


@dataclass(frozen=True, kw_only=True)
class ErrorCode:
    """One entry of the catalogue: everything its documentation page says."""

    code: str
    # None only for `http.error`, whose status is whichever one the framework raised.
    status: int | None
    title: str
    meaning: str
    action: str  # what the client should do about it
    example_detail: str
    example_path: str = "/api/v1/users/me"
    example_errors: tuple[FieldError, ...] = ()
    example_status: int | None = None  # for `http.error`, which has no status of its own

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.code


_CATALOGUE_ENTRIES = (
    # --- requests the service cannot take ---------------------------------------------------
    ErrorCode(
        code="request.malformed",
        status=400,
        title="Malformed request",
        meaning="The request could not be parsed: for example a JSON body that is not JSON.",
        action="Fix the request's syntax (body encoding, Content-Type) before sending it again.",
        example_detail="There was an error parsing the body",
        example_path="/api/v1/items",
    ),
    ErrorCode(
        code="request.validation_failed",
        status=422,
        title="Invalid request fields",
        meaning="Fields of the request are missing or invalid. `errors` lists each one with its "
        "location (`loc`), a message and a type; the rejected values are never echoed.",
        action="Correct the fields listed in `errors` and send the request again.",
        example_detail="The request has invalid or missing fields.",
        example_path="/api/v1/items",
        example_errors=(
            FieldError(
                loc=["body", "title"],
                msg="String should have at least 1 character",
                type="string_too_short",
            ),
        ),
    ),
    ErrorCode(
        code="request.invalid_data",
        status=422,
        title="Value cannot be stored",
        meaning="A value passed validation but the database cannot hold it (out of range, "
        "badly encoded).",
        action="Send a value within the documented bounds of the field.",
        example_detail="A value cannot be stored.",
        example_path="/api/v1/items",
    ),
    ErrorCode(
        code="request.too_large",
        status=413,
        title="Request body too large",
        meaning="The request body is larger than this deployment accepts (MAX_BODY_BYTES).",
        action="Send a smaller body; split large uploads into several requests.",
        example_detail="The request body exceeds 1048576 bytes.",
        example_path="/api/v1/items",
    ),
    ErrorCode(
        code="request.unsupported_media_type",
        status=415,
        title="Unsupported media type",
        meaning="The body's Content-Type is not one this operation reads.",
        action="Send the body in the media type the operation documents (usually JSON).",
        example_detail="Unsupported Media Type",
        example_path="/api/v1/items",
    ),
    ErrorCode(
        code="route.not_found",
        status=404,
        title="No such route",
        meaning="No operation is served at this path.",
        action="Check the path against the API documentation (/docs or /openapi.json).",
        example_detail="Not Found",
        example_path="/api/v1/no-such-thing",
    ),
    ErrorCode(
        code="method.not_allowed",
        status=405,
        title="Method not allowed",
        meaning="The path exists, but not with this HTTP method.",
        action="Use one of the methods the `Allow` response header lists.",
        example_detail="Method Not Allowed",
    ),
    ErrorCode(
        code="http.error",
        status=None,
        title="HTTP error",
        meaning="An HTTP error raised by the web framework itself that no more precise code "
        "names; the status says which.",
        action="Read the status and `detail`; if it is a 4xx, change the request.",
        example_detail="Range Not Satisfiable",
        example_status=416,
    ),
    # --- authentication and authorisation -----------------------------------------------------
    ErrorCode(
        code="auth.missing_credentials",
        status=401,
        title="Authentication required",
        meaning="The operation needs a caller, and the request carries neither a bearer token "
        "nor an API key.",
        action="Get a token from POST /api/v1/auth/token (or use an API key) and send it as "
        "`Authorization: Bearer <token>` (or `X-API-Key`).",
        example_detail="Authentication required.",
    ),
    ErrorCode(
        code="auth.invalid_credentials",
        status=401,
        title="Wrong email or password",
        meaning="The email and password do not match an active user. Which of the two is wrong "
        "is not said, on purpose.",
        action="Check the credentials; do not retry in a loop (logins are rate-limited).",
        example_detail="Incorrect email or password.",
        example_path="/api/v1/auth/token",
    ),
    ErrorCode(
        code="auth.invalid_token",
        status=401,
        title="Invalid token",
        meaning="The bearer token is malformed, expired, signed by an unknown key, meant for "
        "another audience, or names a user who no longer exists or is deactivated. The "
        "`WWW-Authenticate` header says which (RFC 6750).",
        action="Get a new token (log in again) and retry once; if it fails again, the account "
        "is not usable.",
        example_detail="The token has expired.",
    ),
    ErrorCode(
        code="auth.invalid_api_key",
        status=401,
        title="Invalid API key",
        meaning="The X-API-Key header does not name a usable key, or the key's owner is "
        "deactivated.",
        action="Check the key; ask an admin for a new one.",
        example_detail="The API key is not valid.",
    ),
    ErrorCode(
        code="auth.revoked_api_key",
        status=401,
        title="API key revoked",
        meaning="The API key was valid but has been revoked.",
        action="Stop using this key; ask an admin for a new one.",
        example_detail="The API key has been revoked.",
    ),
    ErrorCode(
        code="auth.unauthorized",
        status=401,
        title="Unauthorized",
        meaning="The request is not authenticated well enough for this operation.",
        action="Authenticate (see auth.missing_credentials) and retry.",
        example_detail="Not authenticated",
    ),
    ErrorCode(
        code="auth.forbidden",
        status=403,
        title="Forbidden",
        meaning="The caller is known but may not do this.",
        action="Do not retry with the same credentials; ask for the access you need.",
        example_detail="Forbidden",
    ),
    ErrorCode(
        code="auth.role_required",
        status=403,
        title="Role required",
        meaning="The operation is reserved to a role the caller does not have (usually admin).",
        action="Call it with an account or API key that has the named role.",
        example_detail="This needs the role: admin",
        example_path="/api/v1/users",
    ),
    ErrorCode(
        code="auth.provider_unavailable",
        status=503,
        title="Identity provider unavailable",
        meaning="The token comes from the external identity provider, whose signing keys cannot "
        "be fetched right now.",
        action="Retry later, with backoff; tokens issued by this service still work.",
        example_detail="The identity provider's keys cannot be fetched.",
    ),
    # --- users, items, API keys ---------------------------------------------------------------
    ErrorCode(
        code="user.not_found",
        status=404,
        title="User not found",
        meaning="No user has this id.",
        action="Check the id; the user may have been deleted.",
        example_detail="No such user.",
        example_path="/api/v1/users/0b0f9a8e-5c1d-4a57-9d5e-3c2b7f1e6a10",
    ),
    ErrorCode(
        code="user.email_taken",
        status=409,
        title="Email already registered",
        meaning="Another user already has this email (compared case-insensitively).",
        action="Use another email, or log in with the existing account.",
        example_detail="A user with this email exists.",
        example_path="/api/v1/users",
    ),
    ErrorCode(
        code="user.identity_taken",
        status=409,
        title="Identity already linked",
        meaning="This identity-provider account is already linked to another user.",
        action="Log in with the user it is linked to.",
        example_detail="This identity is already linked.",
    ),
    ErrorCode(
        code="user.wrong_password",
        status=403,
        title="Current password is wrong",
        meaning="Changing the password needs the current one, and the one sent does not match.",
        action="Send the right current password with the new one.",
        example_detail="The current password is wrong.",
    ),
    ErrorCode(
        code="user.password_changed",
        status=409,
        title="Password changed meanwhile",
        meaning="Another request changed this account's password while this one was checking the "
        "current password, so the change was not made.",
        action="Send the request again with the password that is current now.",
        example_detail="The password changed meanwhile; retry.",
    ),
    ErrorCode(
        code="api_key.minted_by_key",
        status=403,
        title="API keys cannot mint API keys",
        meaning="Keys are minted by an administrator signed in with a token; a key's authority is "
        "capped by its creator's current role, which a key-minted key would escape.",
        action="Mint the key with an administrator's bearer token instead of an API key.",
        example_detail="API keys cannot mint API keys.",
        example_path="/api/v1/api-keys",
    ),
    ErrorCode(
        code="user.self_lockout",
        status=409,
        title="Admins cannot lock themselves out",
        meaning="An admin tried to demote or deactivate their own account, which could leave "
        "nobody able to administer the service.",
        action="Have another admin make the change.",
        example_detail="Admins cannot demote or deactivate themselves.",
        example_path="/api/v1/users/0b0f9a8e-5c1d-4a57-9d5e-3c2b7f1e6a10",
    ),
    ErrorCode(
        code="item.not_found",
        status=404,
        title="Item not found",
        meaning="No item with this id is visible to the caller (other users' items are hidden "
        "from non-admins).",
        action="Check the id; list your items with GET /api/v1/items.",
        example_detail="No such item.",
        example_path="/api/v1/items/0b0f9a8e-5c1d-4a57-9d5e-3c2b7f1e6a10",
    ),
    ErrorCode(
        code="api_key.not_found",
        status=404,
        title="API key not found",
        meaning="No API key has this id.",
        action="Check the id; list the keys with GET /api/v1/api-keys.",
        example_detail="No such API key.",
        example_path="/api/v1/api-keys/0b0f9a8e-5c1d-4a57-9d5e-3c2b7f1e6a10",
    ),
    ErrorCode(
        code="api_key.collision",
        status=409,
        title="API key prefix collision",
        meaning="The randomly drawn prefix of a new key is already taken (very rare).",
        action="Retry the request: a new prefix is drawn.",
        example_detail="Key prefix collision; retry.",
        example_path="/api/v1/api-keys",
    ),
    ErrorCode(
        code="tier.name_taken",
        status=409,
        title="Tier name taken",
        meaning="A rate-limit tier with this name already exists.",
        action="Choose another name, or use the existing tier.",
        example_detail="A tier with this name exists.",
        example_path="/api/v1/api-keys",
    ),
    ErrorCode(
        code="not_found",
        status=404,
        title="Not found",
        meaning="The thing the request names does not exist.",
        action="Check the identifiers in the path.",
        example_detail="Not Found",
    ),
    ErrorCode(
        code="conflict",
        status=409,
        title="Conflict",
        meaning="The data conflicts with what is stored (a uniqueness rule).",
        action="Fetch the current state, resolve the conflict and retry.",
        example_detail="The data conflicts.",
        example_path="/api/v1/items",
    ),
    ErrorCode(
        code="transaction.conflict",
        status=409,
        title="Concurrent change",
        meaning="A concurrent change to the same data got in the way (serialisation failure or "
        "deadlock); nothing was changed.",
        action="Retry the request, with a short random backoff.",
        example_detail="A concurrent change got in the way; retry.",
        example_path="/api/v1/items",
    ),
    # --- limits and availability ----------------------------------------------------------------
    ErrorCode(
        code="rate_limit.exceeded",
        status=429,
        title="Rate limit exceeded",
        meaning="The caller sent more requests than its rate limit allows in the current window.",
        action="Wait the number of seconds in `Retry-After` before the next request; the "
        "RateLimit-* headers show the budget.",
        example_detail="Rate limit exceeded: 600/minute.",
    ),
    ErrorCode(
        code="rate_limit.unavailable",
        status=503,
        title="Rate limiting unavailable",
        meaning="This deployment refuses requests when it cannot count them "
        "(RATE_LIMIT_FAIL_MODE=closed), and its rate-limit store is unreachable.",
        action="Retry after `Retry-After` seconds.",
        example_detail="Rate limiting is unavailable.",
    ),
    ErrorCode(
        code="database.unavailable",
        status=503,
        title="Database unavailable",
        meaning="The database cannot be reached, or no connection came free in time.",
        action="Retry later, with backoff; the request had no effect.",
        example_detail="The database is unreachable.",
    ),
    ErrorCode(
        code="health.not_ready",
        status=503,
        title="Not ready",
        meaning="The readiness probe: a dependency the service needs is unavailable, so this "
        "instance should get no traffic for now.",
        action="Orchestrators: keep the instance out of rotation until it answers 200.",
        example_detail="database: unavailable",
        example_path="/health/ready",
    ),
    ErrorCode(
        code="service.unavailable",
        status=503,
        title="Service unavailable",
        meaning="The service cannot serve this request right now.",
        action="Retry later, with backoff.",
        example_detail="Service Unavailable",
    ),
    ErrorCode(
        code="internal",
        status=500,
        title="Internal error",
        meaning="An unexpected error; details are logged under the `request_id`, never sent.",
        action="Retry once; if it persists, report the `request_id` to the operators.",
        example_detail="An unexpected error occurred.",
    ),
)

CATALOGUE: Mapping[str, ErrorCode] = {entry.code: entry for entry in _CATALOGUE_ENTRIES}
assert len(CATALOGUE) == len(_CATALOGUE_ENTRIES), "an error code is catalogued twice"


def catalogued(code: str, status: int | None = None) -> ErrorCode:
    """The entry for `code`; raises UncataloguedCode when there is none or its status differs."""
    entry = CATALOGUE.get(code)
    if entry is None:
        raise UncataloguedCode(f"error code {code!r} has no entry in service/kit/problems.py")
    if status is not None and entry.status not in (None, status):
        raise UncataloguedCode(f"error code {code!r} is catalogued as {entry.status}, not {status}")
    return entry


class Problem(BaseModel):
    """RFC 9457 problem details, plus `code` (stable, for machines) and `errors` (for 422)."""

    type: str = Field(
        description="A URI reference to this code's documentation page: /problems/{code}",
        examples=["/problems/auth.invalid_token"],
    )
    title: str = Field(
        description="A short summary of the code, the same for every occurrence",
        examples=["Invalid token"],
    )
    status: int = Field(examples=[401])
    detail: str | None = Field(default=None, examples=["The token has expired."])
    instance: str | None = Field(
        default=None, description="The request path", examples=["/api/v1/users/me"]
    )
    code: str = Field(
        description="Stable machine-readable code, e.g. user.email_taken",
        examples=["auth.invalid_token"],
    )
    request_id: str | None = None
    errors: list[FieldError] | None = None


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class AppError(Exception):
    """An error with a known status, a catalogued code and a safe detail. The subclass gives
    the status and a default code; the code's catalogue entry must carry the same status."""

    status: int = 500
    code: str = "internal"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code or self.code
        self.entry = catalogued(self.code, self.status)
        super().__init__(detail or self.entry.title)
        self.detail = detail
        self.headers = dict(headers or {})


class Unauthorized(AppError):
    status, code = 401, "auth.unauthorized"


class Forbidden(AppError):
    status, code = 403, "auth.forbidden"


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class UnprocessableContent(AppError):
    status, code = 422, "request.invalid_data"


class TooManyRequests(AppError):
    status, code = 429, "rate_limit.exceeded"


class ServiceUnavailable(AppError):
    status, code = 503, "service.unavailable"


# Status -> code for errors raised by the framework rather than by our code; any other status
# answers `http.error`.
HTTP_CODES: dict[int, str] = {
    400: "request.malformed",
    401: "auth.unauthorized",
    403: "auth.forbidden",
    404: "route.not_found",
    405: "method.not_allowed",
    413: "request.too_large",
    415: "request.unsupported_media_type",
}

# Constraint name -> (code, detail). Domains register their unique constraints here so a
# violation found at flush or commit time becomes a precise 409.
CONSTRAINTS: dict[str, tuple[str, str]] = {}


def invalid_field(loc: tuple[str | int, ...], msg: str, type_: str) -> RequestValidationError:
    """A 422 for a rule Pydantic cannot express (one that depends on runtime settings)."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": type_}])


def register_constraint(name: str, code: str, detail: str) -> None:
    CONSTRAINTS[name] = (catalogued(code, Conflict.status).code, detail)


def problem(
    code: str,
    detail: str | None,
    *,
    status: int | None = None,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    """The problem+json response for a catalogued code; `status` only for `http.error`."""
    entry = catalogued(code, status)
    status = entry.status or status
    if status is None:
        raise UncataloguedCode(f"error code {code!r} needs the response's status")
    body = Problem(
        type=entry.type,
        title=entry.title,
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


def example_body(entry: ErrorCode) -> dict[str, object]:
    """The body a response with this code carries, as its documentation page shows it."""
    body = Problem(
        type=entry.type,
        title=entry.title,
        status=entry.status or entry.example_status or 500,
        detail=entry.example_detail,
        instance=entry.example_path,
        code=entry.code,
        request_id="8f14e45fceea167a5a36dedd4bea2543",
        errors=list(entry.example_errors) or None,
    )
    return body.model_dump(exclude_none=True)
