"""What to tell whom, rendered from versioned form templates. No I/O but reading forms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined, Template
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.common import Applicant, Channel
from contracts.text import email_problem, forbidden_character

FORMS_DIR = Path(__file__).parent / "forms"
NOTIFICATION_NS = uuid.UUID("a4d6c1f0-5b0e-4e8e-bf43-1f6b7d2c9e30")


class FormVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    effective_from: date
    legal_basis: str
    subject: str
    text: str
    html: str


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    name: str
    versions: tuple[FormVersion, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Rendered:
    kind: str
    version: int
    legal_basis: str
    subject: str
    text: str
    html: str


_text_env = Environment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
_html_env = Environment(undefined=StrictUndefined, autoescape=True, trim_blocks=True)


class FormBook:
    """Every form and message template, by kind, each kind versioned by effective date."""

    def __init__(self, forms: list[Form]) -> None:
        self.forms = {f.kind: f for f in forms}
        self._compiled: dict[tuple[str, int], tuple[Template, Template, Template]] = {}

    @classmethod
    def load(cls, directory: Path = FORMS_DIR) -> FormBook:
        forms = []
        for path in sorted(directory.glob("*.yaml")):
            try:
                forms.append(Form.model_validate(yaml.safe_load(path.read_text("utf-8"))))
            except ValidationError as exc:
                e = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in e["loc"])
                raise ValueError(f"{path.name}: field {where}: {e['msg']}") from exc
        return cls(forms)

    def in_force(self, kind: str, on: date) -> FormVersion:
        versions = [v for v in self.forms[kind].versions if v.effective_from <= on]
        if not versions:
            raise LookupError(f"no version of form {kind} in force on {on}")
        return max(versions, key=lambda v: v.version)

    def render(self, kind: str, on: date, context: dict[str, Any]) -> Rendered:
        v = self.in_force(kind, on)
        compiled = self._compiled.get((kind, v.version))
        if compiled is None:  # compiling costs far more than rendering: once per version
            compiled = (
                _text_env.from_string(v.subject),
                _text_env.from_string(v.text),
                _html_env.from_string(v.html),
            )
            self._compiled[(kind, v.version)] = compiled
        subject, text, html = compiled
        ctx = {**context, "legal_basis": v.legal_basis}
        return Rendered(
            kind=kind,
            version=v.version,
            legal_basis=v.legal_basis,
            subject=subject.render(**ctx).strip(),
            text=text.render(**ctx),
            html=html.render(**ctx),
        )


@dataclass(frozen=True)
class Recipient:
    channel: str  # email | desk | post | agency
    address: str


def applicant_recipient(applicant: Applicant, channel: Channel) -> Recipient:
    """Notices go back by the channel the dossier came in; email when we have one."""
    if applicant.email:
        return Recipient("email", applicant.email)
    if channel is Channel.POST and applicant.address:
        return Recipient("post", applicant.address)
    return Recipient("desk", applicant.name)


def address_problem(recipient: Recipient) -> str | None:
    """Why an email recipient cannot be mailed (strict syntax, no DNS), or None."""
    if recipient.channel != "email":
        return None
    return email_problem(recipient.address)


def printable(value: str) -> str:
    """``value`` with the characters a text column must not hold written as escapes."""
    if forbidden_character(value) is None:
        return value
    return "".join(f"\\u{ord(c):04x}" if forbidden_character(c) is not None else c for c in value)[
        :1000
    ]


def notification_id(event_id: uuid.UUID, kind: str, recipient: str) -> uuid.UUID:
    """Deterministic, so a redelivered event finds the notification it already made."""
    return uuid.uuid5(NOTIFICATION_NS, f"{event_id}/{kind}/{recipient}")


def serial_of(code: str) -> str:
    return code.rsplit("-", 1)[-1]


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()
