"""Constrained strings for every field a caller can send.

Every API string field is one of these, so no single input can carry a control character
into PostgreSQL (a NUL answers 500 there), inflate an event past the broker's limit, or
break an SMTP session. Each check fails with a pydantic error whose ``type`` and message
name the reason; the services turn it into a 422 naming the field.

- ``Text(max_length, multiline=False)``: human text, normalised to Unicode NFC; no C0/C1
  control characters, no lone surrogates, no bidirectional overrides; a newline only in a
  multi-line field (``\\r\\n`` is taken as ``\\n``); the length counted after NFC.
- ``Token(pattern, max_length)``: codes and keys in ASCII, checked against a pattern that
  covers the whole value.
- ``email_address``: strict syntax by ``email-validator`` (what pydantic's ``EmailStr``
  uses), without DNS lookups.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Bidirectional embeddings, overrides and isolates: no Vietnamese text needs them, and they
# make a name or a reason display as something other than what it is.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_SEPARATORS = frozenset("\u2028\u2029")


def forbidden_character(value: str, *, multiline: bool = False) -> tuple[int, str] | None:
    """The first character a text field must not hold, with its position, or None."""
    for i, ch in enumerate(value):
        if ch == "\n" and multiline:
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or ch in _BIDI or (ch in _LINE_SEPARATORS and not multiline):
            return i, ch
    return None


def unstorable(value: str) -> str | None:
    """Why PostgreSQL could not store ``value`` as text, or None: its text and jsonb types
    cannot hold U+0000, and a lone surrogate (JSON's "\\ud800" decodes to one) has no
    UTF-8 form."""
    if "\x00" in value:
        return "must not contain the NUL character (U+0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (a lone surrogate has no UTF-8 form)"
    return None


def unstorable_in(value: object, path: str = "") -> tuple[str, str] | None:
    """The first value in a JSON-like value (keys included) PostgreSQL could not store:
    text with U+0000 or a lone surrogate, an integer beyond ``bigint``, a float that is not
    finite (jsonb has no NaN or infinity); its path and why, or None."""
    if isinstance(value, str):
        reason = unstorable(value)
        return (path, reason) if reason else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            return path, "must be an integer PostgreSQL can store (bigint)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "must be a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and (reason := unstorable(k)):
                return where, f"key {reason}"
            if found := unstorable_in(v, where):
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if found := unstorable_in(v, f"{path}.{i}" if path else str(i)):
                return found
    return None


_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN"}


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "") or _CONTROL_NAMES.get(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


@dataclass(frozen=True)
class Text:
    """Human text: NFC, no control characters, at most ``max_length`` characters."""

    max_length: int
    min_length: int = 0
    multiline: bool = False

    def validate(self, value: str) -> str:
        # A cheap bound first, so a megabyte is refused before it is normalised.
        if len(value) > 4 * self.max_length + 16:
            raise _too_long(self.max_length)
        if self.multiline:
            value = value.replace("\r\n", "\n")
        bad = forbidden_character(value, multiline=self.multiline)
        if bad is not None:
            pos, ch = bad
            what = "a control character" if ch not in _BIDI else "a bidirectional override"
            raise PydanticCustomError(
                "string_control_character",
                "must not contain {what} ({char} at position {position})"
                + ("" if self.multiline else "; this field is a single line"),
                {"what": what, "char": _describe(ch), "position": pos},
            )
        value = unicodedata.normalize("NFC", value)
        if len(value) > self.max_length:
            raise _too_long(self.max_length)
        if self.min_length and len(value.strip()) < self.min_length:
            raise PydanticCustomError(
                "string_too_short",
                "must have at least {min_length} characters besides spaces",
                {"min_length": self.min_length},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, core_schema.str_schema())

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["maxLength"] = self.max_length
        if self.min_length:
            out["minLength"] = self.min_length
        out["x-lienthong-text"] = "multiline" if self.multiline else "line"
        return out


def _too_long(n: int) -> PydanticCustomError:
    return PydanticCustomError(
        "string_too_long", "String should have at most {max_length} characters", {"max_length": n}
    )


@dataclass(frozen=True)
class Token:
    """An ASCII code or key: the whole value must match ``pattern``."""

    pattern: str
    max_length: int
    description: str

    def validate(self, value: str) -> str:
        if len(value) > self.max_length:
            raise _too_long(self.max_length)
        if not re.fullmatch(self.pattern, value):
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "must be {description}",
                {"description": self.description},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, core_schema.str_schema())

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["maxLength"] = self.max_length
        out["pattern"] = f"^(?:{self.pattern})$"
        out["description"] = out.get("description") or self.description
        return out


@dataclass(frozen=True)
class Email:
    """An email address of strict syntax (RFC 5321/5322 as ``email-validator`` reads them)."""

    max_length: int = 254

    def validate(self, value: str) -> str:
        if len(value) > self.max_length:
            raise _too_long(self.max_length)
        reason = email_problem(value)
        if reason is not None:
            raise PydanticCustomError(
                "email_invalid", "not a valid email address: {reason}", {"reason": reason}
            )
        return normalize_email(value)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, core_schema.str_schema())

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["maxLength"] = self.max_length
        out["format"] = "email"
        return out


def email_problem(value: str) -> str | None:
    """Why ``value`` is not an address mail can be sent to, or None if it is.

    Syntax only (no DNS): a control character, a display name, a quoted local part or an
    IP-literal domain are all refused, as is a domain reserved for special use (``.local``,
    ``.test``, ``.invalid``, ...).
    """
    bad = forbidden_character(value)
    if bad is not None:
        return f"contains {_describe(bad[1])} at position {bad[0]}"
    try:
        validate_email(
            value,
            check_deliverability=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None


def normalize_email(value: str) -> str:
    """The address as ``email-validator`` normalises it (NFC, lower-case domain)."""
    return validate_email(value, check_deliverability=False).normalized
