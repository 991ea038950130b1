"""Exception -> problem+json: our AppErrors, the framework's, the driver's, and anything else.

No body ever carries a stack trace, SQL, a driver message or a class name: only the log does,
under the request id.
"""

from __future__ import annotations

import logging
import re
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.problems import (
    CONSTRAINTS,
    HTTP_CODES,
    AppError,
    Conflict,
    FieldError,
    ProblemResponse,
    ServiceUnavailable,
    UnprocessableContent,
    problem,
)

log = logging.getLogger("service.errors")

# --- mapping exceptions ---------------------------------------------------------------------

_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '([^']+)'|(\S+))")
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
# Integrity violations that are the client's input, not a clash with other data: 422, not 409.
_INVALID_SQLSTATES = {"23502", "23514"}  # not_null_violation, check_violation
_SQLITE_INVALID = re.compile(r"^(NOT NULL|CHECK) constraint failed")
_UNAVAILABLE = (sa_exc.TimeoutError, ConnectionError, TimeoutError, OSError)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or getattr(current, "orig", None)
    return chain


def _constraint_name(exc: sa_exc.IntegrityError) -> str | None:
    for cause in _causes(exc):
        if name := getattr(cause, "constraint_name", None):
            return str(name)
    if match := _SQLITE_UNIQUE.search(str(exc.orig)):
        index, column = match.groups()
        return index or "uq_" + column.replace(".", "_")
    return None


def _sqlstate(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if state := getattr(cause, "sqlstate", None):
            return str(state)
    return None


def classify_db_error(exc: BaseException) -> AppError | None:
    """The client-facing error for a database exception, or None when it is a plain bug."""
    if isinstance(exc, sa_exc.IntegrityError):
        if _sqlstate(exc) in _INVALID_SQLSTATES or _SQLITE_INVALID.match(str(exc.orig)):
            return UnprocessableContent(
                "A required value is missing or a value is out of range.",
                code="request.invalid_data",
            )
        # Unique (23505) and foreign-key (23503) violations: the data clashes with other rows.
        name = _constraint_name(exc)
        code, detail = CONSTRAINTS.get(name or "", ("conflict", "The data conflicts."))
        return Conflict(detail, code=code)
    # SQLSTATE class 22 ("data exception"): a value the database cannot hold, the client's input.
    if isinstance(exc, sa_exc.DataError) or any(
        str(getattr(c, "sqlstate", "")).startswith("22") for c in _causes(exc)
    ):
        return UnprocessableContent("A value cannot be stored.", code="request.invalid_data")
    if any(getattr(c, "sqlstate", None) in _RETRYABLE_SQLSTATES for c in _causes(exc)):
        return Conflict("A concurrent change got in the way; retry.", code="transaction.conflict")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return ServiceUnavailable("The database is unreachable.", code="database.unavailable")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, *_UNAVAILABLE)):
        return ServiceUnavailable("The database is unreachable.", code="database.unavailable")
    return None


# --- handlers -------------------------------------------------------------------------------


def _app_error_response(request: Request, err: AppError) -> ProblemResponse:
    return problem(err.code, err.detail, instance=request.url.path, headers=err.headers)


async def _on_app_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, AppError)
    return _app_error_response(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http.error")
    headers = dict(exc.headers or {})
    # Static files (a mount, not a route) bring their own Allow.
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return problem(
        code,
        exc.detail if isinstance(exc.detail, str) else None,
        status=exc.status_code,
        instance=request.url.path,
        headers=headers,
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette answers 405 from the first
    route whose path matches, so its Allow header would name that route's methods only."""
    methods: set[str] = set()
    for route in request.app.state.endpoints:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    # Only location, message and type: the rejected input may be a password.
    errors = [
        FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type")))
        for e in exc.errors()
    ]
    return problem(
        "request.validation_failed",
        "The request has invalid or missing fields.",
        instance=request.url.path,
        errors=errors,
    )


async def _on_db_error(request: Request, exc: Exception) -> ProblemResponse:
    mapped = classify_db_error(exc)
    if mapped is None:
        _log_db_error(request.url.path, exc)
        return _internal_problem(request.url.path)
    if mapped.status >= 500:
        log.warning("database unavailable: %s", type(exc).__name__)
    return _app_error_response(request, mapped)


def _log_db_error(path: str, exc: BaseException) -> None:
    """An unclassified database error, logged by kind, SQLSTATE and stack only: the message of
    a driver error can quote the values it was given (password hashes, emails), and the engine
    hides bound parameters (hide_parameters) but cannot rewrite the driver's text."""
    kinds = " <- ".join(type(cause).__name__ for cause in _causes(exc))
    stack = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unhandled database error on %s: %s (sqlstate %s)\n%s", path, kinds, _sqlstate(exc), stack
    )


def _internal_problem(path: str) -> ProblemResponse:
    return problem("internal", "An unexpected error occurred.", instance=path)


def internal_error(path: str, exc: BaseException) -> ProblemResponse:
    """The generic 500 for an exception nothing mapped; its detail goes to the log only."""
    if isinstance(exc, sa_exc.SQLAlchemyError):
        _log_db_error(path, exc)
    else:
        log.error("unhandled error on %s", path, exc_info=exc)
    return _internal_problem(path)


class CatchUnhandled:
    """The catch-all 500 inside CORSMiddleware, added by create_app only when CORS is on: so a
    500 carries the CORS headers a browser needs to read it. Without CORS, the Edge's own
    catch-all does this. Starlette's own catch-all sits outside every middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            await internal_error(scope.get("path", ""), exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _on_app_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _on_db_error)
    for exc_type in _UNAVAILABLE:
        app.add_exception_handler(exc_type, _on_db_error)
