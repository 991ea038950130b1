"""Shared pieces of request bodies.

RequestModel refuses unknown fields and text that cannot be encoded (lone surrogates: a 422
naming the field, not a 500 from the driver or the hasher). Text that is stored must also be
free of NUL characters, which PostgreSQL cannot hold: `stored_text` says so in the schema
(a pattern), so clients and the OpenAPI document know it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

NO_NUL = r"^[^\x00]*$"


def stored_text(*, max_length: int, min_length: int = 0) -> Any:
    return Field(min_length=min_length, max_length=max_length, pattern=NO_NUL)


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _encodable_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text") from None
        return value
