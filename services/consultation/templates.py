"""Opinion-request templates: versioned data files, validated on load.

Silence counts as consent only where a legal text says so, and then at the deadline: the
template names the text and article (``final.legal_basis``) and, for a local rule, the
province whose local bodies it binds (``final.jurisdiction``).
"""

from __future__ import annotations

import functools
import re
from datetime import date
from enum import StrEnum
from pathlib import Path

import jinja2
import yaml
from jinja2 import Environment, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.agencies import Agency
from contracts.common import AgencyId, Duration, TimeUnit
from contracts.envelope import NFCStr
from contracts.events import Decision

TEMPLATES_DIR = Path(__file__).parent / "templates"


class TemplateError(ValueError):
    pass


class Role(StrEnum):
    OFFICER = "officer"
    DEPARTMENT_HEAD = "department_head"
    AGENCY_HEAD = "agency_head"
    COORDINATOR = "coordinator"


class Asked(BaseModel):
    """Who is asked: an agency, optionally a department, and the role expected to answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Role = Role.DEPARTMENT_HEAD
    department: NFCStr | None = None


class DecisionRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    requires: tuple[str, ...] = ()


class ReplySchema(BaseModel):
    """What a reply must contain: allowed decisions, the fields each needs, who may sign."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    decisions: dict[Decision, DecisionRule]
    signer_roles: tuple[Role, ...] = (Role.DEPARTMENT_HEAD, Role.AGENCY_HEAD)

    @model_validator(mode="after")
    def _fields_known(self) -> ReplySchema:
        for d, rule in self.decisions.items():
            unknown = set(rule.requires) - {"conditions", "reasons"}
            if unknown:
                raise ValueError(f"decision {d.value}: unknown required fields {sorted(unknown)}")
        return self


class EscalationStep(BaseModel):
    """At the deadline plus ``after``, tell a rung of the asked agency's ladder and ask them
    to act. Who that is comes from the agency registry when the step fires (department
    head, the agency's head, then the province chairman or a vertical agency's superior);
    ``notify_name``/``notify_agency`` override it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    after: Duration
    notify_role: Role
    notify_name: NFCStr | None = None
    notify_agency: AgencyId | None = None
    ask: NFCStr

    @model_validator(mode="after")
    def _upward(self) -> EscalationStep:
        if self.notify_role is Role.OFFICER:
            raise ValueError("escalation goes up: department_head, agency_head or coordinator")
        return self


DOCUMENT_NUMBER = re.compile(r"\b[0-9]{1,5}/(?:[0-9]{4}/)?[A-ZĐ][A-ZĐ0-9]*(?:-[A-ZĐ0-9]+)*")
"""A Vietnamese legal document's number: 1750/QĐ-UBND, 02/2022/TT-BTNMT, 62/2020/QH14."""
ARTICLE = re.compile(r"\bĐiều [0-9]+")
PROVINCE_CODE = r"^[A-Z][0-9]{2}$"


class FinalLapse(BaseModel):
    """What silence means once the deadline passes.

    With ``deemed_consent`` (only on a legal text naming its number and article) the request
    is deemed consented at the deadline itself. ``jurisdiction`` makes it a local rule: it
    binds only that province's local bodies, not vertical agencies nor other provinces.
    Without a binding rule the escalation ladder runs and the request lapses ``after`` its
    last step, still waiting for an answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    deemed_consent: bool = False
    legal_basis: NFCStr | None = None
    jurisdiction: str | None = Field(
        default=None, pattern=PROVINCE_CODE, description="Province code of a local rule, e.g. H29"
    )
    after: Duration = Duration(value=0, unit=TimeUnit.WORKING_HOURS)

    @model_validator(mode="after")
    def _basis(self) -> FinalLapse:
        if self.deemed_consent:
            if not self.legal_basis:
                raise ValueError("deemed_consent needs legal_basis (the text and article)")
            if not DOCUMENT_NUMBER.search(self.legal_basis):
                raise ValueError("legal_basis must name the document's number")
            if not ARTICLE.search(self.legal_basis):
                raise ValueError("legal_basis must name the article (Điều ...)")
        if self.jurisdiction is not None:
            if not self.deemed_consent:
                raise ValueError("jurisdiction scopes a deemed-consent rule")
            if not DOCUMENT_NUMBER.search(self.legal_basis or ""):
                raise ValueError("a local rule's legal_basis must name its document number")
        return self

    def binds(self, agency: Agency | None) -> bool:
        """Whether silence of ``agency`` counts as consent under this rule: a national
        text binds every body asked under it; a local rule only its province's local
        bodies (an agency unknown to the registry is not assumed bound)."""
        if not self.deemed_consent:
            return False
        if self.jurisdiction is None:
            return True
        return agency is not None and agency.province == self.jurisdiction and not agency.vertical


class Template(BaseModel):
    """One version of an opinion-request template."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    version: int = Field(ge=1)
    effective_from: date
    title: NFCStr
    asked: Asked = Asked()
    subject: NFCStr = Field(description="Jinja2, e.g. 'Lấy ý kiến hồ sơ {{ code }}'")
    questions: tuple[NFCStr, ...] = Field(min_length=1)
    attachments: tuple[str, ...] = ()
    reply: ReplySchema
    deadline: Duration
    reminders: tuple[Duration, ...] = ()
    escalation: tuple[EscalationStep, ...] = ()
    final: FinalLapse = FinalLapse()

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        if self.final.deemed_consent and not self.deadline.legal_basis:
            raise ValueError("a deemed-consent deadline needs its legal_basis (deadline)")
        if self.final.deemed_consent and self.final.jurisdiction is None and self.escalation:
            raise ValueError(
                "a national deemed-consent rule ends the request at the deadline:"
                " escalation steps after it would never fire"
            )
        return self


class TemplateBook:
    """Every template version; a request takes the version in force when it opens."""

    def __init__(self, templates: list[Template]) -> None:
        self.by_id: dict[str, list[Template]] = {}
        for t in templates:
            self.by_id.setdefault(t.id, []).append(t)
        for ts in self.by_id.values():
            ts.sort(key=lambda t: t.version)

    @classmethod
    def load(cls, directory: Path | str = TEMPLATES_DIR) -> TemplateBook:
        out: list[Template] = []
        for path in sorted(Path(directory).glob("*.yaml")):
            try:
                raw = yaml.safe_load(path.read_text("utf-8"))
                out.append(Template.model_validate(raw))
            except ValidationError as exc:
                e = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in e["loc"]) or "top level"
                raise TemplateError(f"{path.name}: field {where}: {e['msg']}") from exc
            except yaml.YAMLError as exc:
                raise TemplateError(f"{path.name}: not valid YAML: {exc}") from exc
        return cls(out)

    def in_force(self, template_id: str, on: date) -> Template:
        versions = [t for t in self.by_id.get(template_id, []) if t.effective_from <= on]
        if not versions:
            raise TemplateError(f"no template {template_id!r} in force on {on}")
        return versions[-1]

    def get(self, template_id: str, version: int) -> Template:
        for t in self.by_id.get(template_id, []):
            if t.version == version:
                return t
        raise TemplateError(f"no template {template_id!r} version {version}")

    def all(self) -> list[Template]:
        return [t for ts in self.by_id.values() for t in ts]


_env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _compiled_subject(source: str) -> jinja2.Template:
    return _env.from_string(source)


def render_subject(template: Template, **context: object) -> str:
    return _compiled_subject(template.subject).render(**context)
