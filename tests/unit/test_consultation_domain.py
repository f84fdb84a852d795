"""Consultation rules: templates, timer plans, replies, signatures, the audit chain."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.events import Decision
from services.consultation import domain
from services.consultation.templates import Role, TemplateBook, TemplateError
from services.runtime.calendar import VN_TZ, WorkingCalendar, format_local

book = TemplateBook.load()
cal = WorkingCalendar()


def test_shipped_templates_cover_the_catalogue() -> None:
    from services.intake.domain import Catalogue

    ids = {t.id for t in book.all()}
    for p in Catalogue.load().all():
        for c in p.consultations:
            assert c.template_id in ids, (p.code, c.template_id)
    five = book.in_force("irrigation-works-opinion", datetime.now(UTC).date())
    assert (five.deadline.value, five.final.deemed_consent) == (5, True)
    assert five.final.legal_basis
    fifteen = book.in_force("environment-impact-opinion", datetime.now(UTC).date())
    assert (fifteen.deadline.value, fifteen.final.deemed_consent) == (15, False)


def test_deemed_consent_needs_a_legal_basis(tmp_path: Path) -> None:
    src = (
        Path(__file__).parents[2] / "services/consultation/templates/environment-opinion.yaml"
    ).read_text("utf-8")
    (tmp_path / "x.yaml").write_text(src.replace("legal_basis:", "legal_basis_gone:"), "utf-8")
    with pytest.raises(TemplateError, match=r"x\.yaml"):
        TemplateBook.load(tmp_path)


def test_timer_plan_orders_reminders_ladder_and_final() -> None:
    t = book.in_force("environment-impact-opinion", datetime.now(UTC).date())
    opened = datetime(2026, 12, 1, 9, 0, tzinfo=VN_TZ)
    due = cal.deadline(opened, t.deadline)
    assert format_local(due) == "17:00 ngày 22/12/2026"
    plan = domain.timer_plan(cal, t, uuid.uuid4(), due)
    kinds = [p.kind for p in plan]
    assert kinds == [domain.REMIND] + [domain.ESCALATE] * 3 + [domain.FINAL]
    reminders = [p.due_at for p in plan if p.kind == domain.REMIND]
    assert all(r < due for r in reminders)
    ladder = [p.due_at for p in plan if p.kind == domain.ESCALATE]
    assert ladder == sorted(ladder) and ladder[0] > due
    assert plan[-1].due_at >= ladder[-1]


def test_reply_content_rules() -> None:
    t = book.in_force("planning-architecture-opinion", datetime.now(UTC).date())
    domain.check_reply_content(t, Decision.AGREE, None, None)
    with pytest.raises(domain.ReplyError) as e:
        domain.check_reply_content(t, Decision.AGREE_WITH_CONDITIONS, None, None)
    assert e.value.field == "conditions"
    with pytest.raises(domain.ReplyError) as e:
        domain.check_reply_content(t, Decision.DISAGREE, None, "  ")
    assert e.value.field == "reasons"


def _signer(agency: str = "000.00.07.H29", role: Role = Role.DEPARTMENT_HEAD):
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, domain.Signer("k1", agency, "Nguyễn Văn A", role, pub)


def test_signatures() -> None:
    key, signer = _signer()
    rid = uuid.uuid4()
    msg = domain.canonical_reply(rid, Decision.AGREE, None, None, "k1", "n1")
    sig = base64.b64encode(key.sign(msg)).decode()
    ok = {"agency_id": "000.00.07.H29", "allowed_roles": (Role.DEPARTMENT_HEAD,), "message": msg}
    domain.verify_signature(signer, signature_b64=sig, **ok)
    tampered = domain.canonical_reply(rid, Decision.DISAGREE, None, None, "k1", "n1")
    with pytest.raises(domain.ReplyError, match="không khớp với nội dung"):
        domain.verify_signature(signer, signature_b64=sig, **{**ok, "message": tampered})
    # a valid key of someone not allowed to answer is a refusal of authority, not of the
    # signature (403, not 401), told in Vietnamese without raw role ids
    with pytest.raises(domain.SignerNotAllowed, match="thuộc cơ quan khác"):
        domain.verify_signature(signer, signature_b64=sig, **{**ok, "agency_id": "000.00.08.H29"})
    with pytest.raises(domain.SignerNotAllowed, match="chức danh trưởng phòng") as e:
        domain.verify_signature(
            signer, signature_b64=sig, **{**ok, "allowed_roles": (Role.AGENCY_HEAD,)}
        )
    assert "department_head" not in e.value.reason and "thủ trưởng cơ quan" in e.value.reason
    with pytest.raises(domain.ReplyError, match="không có khóa ký số"):
        domain.verify_signature(None, signature_b64=sig, **ok)
    with pytest.raises(domain.ReplyError):
        domain.verify_signature(signer, signature_b64="@@@", **ok)


def test_audit_chain_detects_alteration_and_removal() -> None:
    rid = uuid.uuid4()
    rows, prev = [], domain.GENESIS
    for seq, action in enumerate(["opened", "read", "replied"], start=1):
        at = datetime(2026, 12, 1, 9, seq, tzinfo=UTC)
        h = domain.audit_hash(prev, rid, seq, action, "x", at, {"n": seq})
        rows.append(
            {
                "id": seq,
                "request_id": rid,
                "seq": seq,
                "action": action,
                "actor": "x",
                "at": at,
                "details": {"n": seq},
                "prev_hash": prev,
                "hash": h,
            }
        )
        prev = h
    assert domain.verify_chain(rows, prev) is None
    altered = [dict(r) for r in rows]
    altered[1]["actor"] = "someone else"
    broken = domain.verify_chain(altered, prev)
    assert broken is not None and broken.seq == 2 and "altered" in broken.reason
    assert domain.verify_chain(rows[:2], prev) is not None


def test_cli_keygen_and_sign_make_a_verifiable_reply(tmp_path: Path, capsys) -> None:
    import json

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from services.consultation import cli

    pem = tmp_path / "k.pem"
    assert (
        cli.main(
            [
                "keygen",
                "--key-id",
                "k1",
                "--agency",
                "000.00.07.H29",
                "--person",
                "Nguyễn Văn A",
                "--out",
                str(pem),
            ]
        )
        == 0
    )
    public = base64.b64decode(json.loads(capsys.readouterr().out)["public_key"])
    rid = uuid.uuid4()
    assert (
        cli.main(
            [
                "sign",
                "--key-file",
                str(pem),
                "--key-id",
                "k1",
                "--request",
                str(rid),
                "--decision",
                "disagree",
                "--reasons",
                "Không phù hợp quy hoạch",
            ]
        )
        == 0
    )
    body = json.loads(capsys.readouterr().out)
    assert load_pem_private_key(pem.read_bytes(), None) is not None
    signer = domain.Signer("k1", "000.00.07.H29", "A", Role.DEPARTMENT_HEAD, public)
    domain.verify_signature(
        signer,
        agency_id="000.00.07.H29",
        allowed_roles=(Role.DEPARTMENT_HEAD,),
        message=domain.canonical_reply(
            rid, Decision.DISAGREE, None, body["reasons"], "k1", body["nonce"]
        ),
        signature_b64=body["signature"],
    )
