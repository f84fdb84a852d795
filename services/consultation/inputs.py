"""What consultation accepts from callers: text PostgreSQL can store, and inbox cursors.

Bad input is the caller's fault and answers 422 naming the field, never a 500 from the
database (PostgreSQL's text cannot hold NUL) or from a decoder.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel

from contracts.envelope import NFCStr
from contracts.text import unstorable


def no_nul(value: str) -> str:
    """Text PostgreSQL can store: no U+0000 (its text type cannot hold it) and no lone
    surrogate (JSON's "\\ud800" decodes to one; it has no UTF-8 form). Refused at the edge
    with the field's name instead of failing in the database."""
    reason = unstorable(value)
    if reason:
        raise ValueError(reason)
    return value


Text = Annotated[NFCStr, AfterValidator(no_nul)]
"""NFC text without NUL: every string of consultation's own request bodies."""

PlainText = Annotated[str, AfterValidator(no_nul)]
"""An identifier-like string without NUL (not normalised: it is signed as given)."""


def unstorable_fields(body: BaseModel) -> list[tuple[str, str]]:
    """The string fields of ``body`` PostgreSQL could not store, with why."""
    out: list[tuple[str, str]] = []
    for name, value in body.model_dump().items():
        reason = unstorable(value) if isinstance(value, str) else None
        if reason:
            out.append((name, reason))
    return out


def public_key_bytes(text: str) -> bytes | None:
    """The 32 raw bytes of an Ed25519 public key given as base64, or None when ``text`` is
    not ASCII base64 of exactly 32 bytes (``b64decode`` raises ValueError, not
    ``binascii.Error``, on non-ASCII text)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class CursorError(ValueError):
    """A cursor this service did not hand out."""


def encode_cursor(due_at: datetime, rid: UUID) -> str:
    """An opaque keyset position (due time, request id): the last row of a page."""
    raw = f"{due_at.isoformat()}|{rid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        due, rid = text.split("|")
        at = datetime.fromisoformat(due)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at, UUID(rid)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise CursorError("con trỏ trang không hợp lệ (không do hệ thống cấp)") from exc


def problem(field: str, reason: str) -> dict[str, Any]:
    """The 4xx body consultation answers: a summary and the field with its reason."""
    return {"detail": reason, "errors": [{"field": field, "reason": reason}]}
