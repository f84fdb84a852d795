"""The consultation round aggregate, without PostgreSQL: its rules, the events it records,
and the canonical form replies are signed over."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.common import Duration
from contracts.events import Decision, Outcome
from services.consultation import domain
from services.consultation.domain import Refusal, Refused, Request, Round, Status
from services.consultation.templates import Role, TemplateBook
from tests.unit.test_consultation_silence import CivilCalendar

T = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 09:00 in Hồ Chí Minh City, a Tuesday
LEAD = "000.00.06.H29"  # Sở Xây dựng (building permit)
book = TemplateBook.load()
cal = CivilCalendar()
TEMPLATES = ["planning-architecture-opinion", "environment-opinion", "fire-safety-opinion"]
AGENCIES = ["000.00.07.H29", "000.00.08.H29", "000.02.30.H29"]
# Environmental-impact appraisal (lead Sở NN&MT): one opinion with a legal basis for deemed
# consent (the irrigation-works agency), one without (Sở Xây dựng, asked as a body concerned).
EIA_LEAD = "000.00.08.H29"
EIA_TEMPLATES = ["irrigation-works-opinion", "environment-impact-opinion"]
EIA_AGENCIES = ["000.02.08.H29", "000.00.06.H29"]


def opened(eia: bool = False) -> Round:
    """A round opened with its requests, as ``Opinions.open_round`` does it: a building
    permit's three, or an environmental-impact appraisal's two."""
    rnd = Round(code="000.00.01.H29-261201-0001")
    templates, asked = (EIA_TEMPLATES, EIA_AGENCIES) if eia else (TEMPLATES, AGENCIES)
    for i, (tid, agency) in enumerate(zip(templates, asked, strict=True)):
        t = book.in_force(tid, T.date())
        rnd.add_request(
            Request(
                id=uuid.UUID(int=i + 1),
                dossier_code=rnd.code,
                lead_agency=EIA_LEAD if eia else LEAD,
                agency_id=agency,
                template_id=t.id,
                template_version=t.version,
                status=Status.OPEN,
                due_at=cal.deadline(T, t.deadline),
            ),
            template=t,
            calendar=cal,
            agency_name="Cơ quan",
            subject="Lấy ý kiến",
            actor="system",
            at=T,
        )
    return rnd


def types(rnd: Round) -> list[str]:
    out = [e.event_type for e in rnd.events]
    rnd.events = []
    return out


def reply(
    rnd: Round, i: int, key: Ed25519PrivateKey, *, agency: str | None = None, eia: bool = False
) -> None:
    templates, asked = (EIA_TEMPLATES, EIA_AGENCIES) if eia else (TEMPLATES, AGENCIES)
    rid = uuid.UUID(int=i + 1)
    nonce = uuid.uuid4().hex
    msg = domain.canonical_reply(rid, Decision.AGREE, None, None, "k", nonce)
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    rnd.record_reply(
        rid,
        agency_id=agency or asked[i],
        actor="someone",
        template=book.in_force(templates[i], T.date()),
        decision=Decision.AGREE,
        conditions=None,
        reasons=None,
        signer_key="k",
        nonce=nonce,
        signature=base64.b64encode(key.sign(msg)).decode(),
        signer=domain.Signer("k", asked[i], "Người ký", Role.DEPARTMENT_HEAD, pub),
        at=T + timedelta(days=1),
    )


def test_canonical_reply_is_rfc8785() -> None:
    rid = uuid.UUID("3f2c1d9e-0b7a-4c55-9e61-2d8f5a0c7b11")
    got = domain.canonical_reply(
        rid, Decision.AGREE_WITH_CONDITIONS, 'PCCC "đạt"\t😀\u2028\x1f', None, "k-1", "n-1"
    )
    # Keys sorted, no spaces, UTF-8 kept as is (U+2028 too), only ", \\ and controls
    # escaped, controls without a short form as lower-case \\u00xx.
    want = (
        '{"conditions":"PCCC \\"đạt\\"\\t😀\u2028\\u001f","decision":"agree_with_conditions",'
        '"nonce":"n-1","reasons":"","request_id":"3f2c1d9e-0b7a-4c55-9e61-2d8f5a0c7b11",'
        '"signer":"k-1"}'
    ).encode()
    assert got == want


def test_opening_plans_timers_and_says_so() -> None:
    rnd = opened()
    assert types(rnd) == ["consultation.requested"] * 3
    assert [a.action for a in rnd.audits] == ["opened"] * 3
    assert {t.payload["gen"] for t in rnd.plan_timers} == {0}
    assert rnd.opened_at == T


def test_an_ended_round_never_opens_and_keeps_the_first_end() -> None:
    rnd = Round(code="000.00.01.H29-261201-0002")
    assert rnd.may_open()
    assert rnd.end("dossier.withdrawn", "rút hồ sơ", T) == []
    assert not rnd.may_open() and rnd.ended_at == T
    rnd.end("dossier.stopped", "dừng", T + timedelta(hours=1))
    assert (rnd.ended_by, rnd.ended_at) == ("dossier.withdrawn", T)
    assert rnd.events == [] and rnd.plan_timers == []  # never opened: nothing to say


def test_ending_cancels_what_is_open_and_completes_once() -> None:
    rnd = opened()
    types(rnd)
    reply(rnd, 0, Ed25519PrivateKey.generate())
    assert types(rnd) == ["consultation.replied"]
    cancelled = rnd.end("dossier.stopped", "dừng", T)
    assert [r.id.int for r in cancelled] == [2, 3]
    assert types(rnd) == ["consultation.cancelled"] * 2 + ["consultation.round_completed"]
    rnd.end("dossier.stopped", "dừng", T)
    assert types(rnd) == []


def test_one_outcome_per_request_and_the_round_completes_once() -> None:
    rnd = opened()
    types(rnd)
    key = Ed25519PrivateKey.generate()
    reply(rnd, 0, key)
    with pytest.raises(Refused) as e:
        reply(rnd, 0, key)
    assert e.value.kind is Refusal.CLOSED
    with pytest.raises(Refused) as e:
        reply(rnd, 1, key, agency=AGENCIES[0])
    assert e.value.kind is Refusal.FORBIDDEN
    env = rnd.requests[1]
    rnd.lapse(env.id, 0, book.in_force(TEMPLATES[1], T.date()), env.due_at)  # deemed consent
    assert types(rnd) == ["consultation.replied", "consultation.deemed_consent"]

    eia = opened(eia=True)
    types(eia)
    irrigation, builder = eia.requests
    late = T + timedelta(days=60)
    eia.lapse(irrigation.id, 0, book.in_force(EIA_TEMPLATES[0], T.date()), irrigation.due_at)
    eia.lapse(builder.id, 0, book.in_force(EIA_TEMPLATES[1], T.date()), late)  # lapsed, waits
    assert types(eia) == ["consultation.deemed_consent", "consultation.lapsed"]
    reply(eia, 1, key, eia=True)  # a lapsed request can still be answered
    events = eia.events
    assert [e.event_type for e in events] == [
        "consultation.replied",
        "consultation.round_completed",
    ]
    outcomes = events[1].outcomes  # type: ignore[attr-defined]
    assert [(o.agency_id, o.outcome) for o in outcomes] == [
        ("000.00.06.H29", Outcome.REPLIED),
        ("000.02.08.H29", Outcome.DEEMED_CONSENT),
    ]


def test_a_signature_over_other_content_is_refused() -> None:
    rnd = opened()
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = domain.canonical_reply(uuid.UUID(int=1), Decision.DISAGREE, None, "x", "k", "n")
    with pytest.raises(Refused) as e:
        rnd.record_reply(
            uuid.UUID(int=1),
            agency_id=AGENCIES[0],
            actor="someone",
            template=book.in_force(TEMPLATES[0], T.date()),
            decision=Decision.AGREE,
            conditions=None,
            reasons=None,
            signer_key="k",
            nonce="n",
            signature=base64.b64encode(key.sign(msg)).decode(),
            signer=domain.Signer("k", AGENCIES[0], "Người ký", Role.DEPARTMENT_HEAD, pub),
            at=T,
        )
    assert (e.value.kind, e.value.field) == (Refusal.UNSIGNED, "signature")


def test_an_extension_supersedes_the_old_timers() -> None:
    rnd = opened()
    rnd.plan_timers = []
    fire = rnd.requests[2]
    before = fire.due_at
    rnd.extend(
        fire.id,
        agency_id=LEAD,
        actor="lead",
        by=Duration(value=5),
        reason="chờ bản vẽ",
        template=book.in_force(TEMPLATES[2], T.date()),
        calendar=cal,
        at=T + timedelta(days=1),
    )
    assert fire.due_at > before and fire.extensions == 1
    assert rnd.cancel_timers == [fire.id]
    assert all("/g1/" in t.ref and t.payload["gen"] == 1 for t in rnd.plan_timers)
    types(rnd)
    rnd.remind(fire.id, 0, 0, T + timedelta(days=2))  # planned before the extension
    assert types(rnd) == []
    rnd.remind(fire.id, 1, 0, T + timedelta(days=2))
    assert types(rnd) == ["consultation.reminded"]
    with pytest.raises(Refused) as e:
        rnd.extend(
            fire.id,
            agency_id=AGENCIES[2],
            actor="asked",
            by=Duration(value=5),
            reason="xin thêm",
            template=book.in_force(TEMPLATES[2], T.date()),
            calendar=cal,
            at=T,
        )
    assert e.value.kind is Refusal.FORBIDDEN
