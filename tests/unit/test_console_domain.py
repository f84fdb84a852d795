"""The console's pure rules: folds that do not depend on arrival order, agencies found in
data, masking, dead letters read raw, and the ACL rows that let it watch and replay."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from contracts.topics import CONSULTATION, DEAD_LETTERS, DOSSIER, REPLAYS
from services.console import domain
from services.console.domain import Fact, fold_dossier, fold_request
from services.runtime import acl

CODE = "000.00.01.H29-251124-0007"
T0 = datetime(2025, 11, 24, 2, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def facts() -> list[Fact]:
    return [
        Fact(
            at(0),
            "a",
            "dossier.received",
            {
                "code": CODE,
                "procedure_code": "1.009972",
                "procedure_name": "Cấp giấy phép xây dựng",
                "channel": 2,
                "receiving_agency": "000.00.01.H29",
                "lead_agency": "000.00.06.H29",
                "received_at": at(0).isoformat(),
                "appointment_at": at(10000).isoformat(),
                "status": 2,
            },
        ),
        Fact(
            at(1),
            "b",
            "routing.dossier_routed",
            {
                "code": CODE,
                "status": 4,
                "state": "processing",
                "lead_agency": "000.00.06.H29",
                "appointment_at": at(10000).isoformat(),
            },
        ),
        Fact(
            at(50),
            "c",
            "routing.apology_issued",
            {"code": CODE, "appointment_at": at(20000).isoformat()},
        ),
        Fact(
            at(90),
            "d",
            "routing.result_ready",
            {
                "code": CODE,
                "timeliness": "late",
                "ready_at": at(90).isoformat(),
                "apologies": 1,
                "state": "result_ready",
                "status": 9,
            },
        ),
        Fact(at(95), "e", "notification.sent", {"code": CODE}),
    ]


def test_the_dossier_fold_does_not_depend_on_arrival_order() -> None:
    expected = fold_dossier(CODE, facts())
    assert expected is not None
    assert expected["state"] == "result_ready" and expected["portal_status"] == 9
    assert expected["online"] is True and expected["agency"] == "000.00.06.H29"
    assert expected["apologies"] == 1 and expected["timeliness"] == "late"
    assert expected["appointment_at"] == at(20000) and expected["events"] == 4
    for seed in range(20):
        shuffled = facts()
        random.Random(seed).shuffle(shuffled)
        assert fold_dossier(CODE, shuffled) == expected
    assert fold_dossier(CODE, [facts()[-1]]) is None


def test_a_closed_request_stays_closed_whatever_comes_late() -> None:
    rid = "5b2f8a54-6a7e-4a0e-9a55-0d1c5e7f0c11"
    base = {"request_id": rid, "code": CODE, "agency_id": "000.02.30.H29"}
    fs = [
        Fact(
            at(0),
            "1",
            "consultation.requested",
            {
                **base,
                "lead_agency": "000.00.06.H29",
                "due_at": at(100).isoformat(),
                "subject": "PCCC",
            },
        ),
        Fact(at(10), "2", "consultation.reminded", base),
        Fact(
            at(20), "3", "consultation.escalated", {**base, "step": 1, "notify_role": "agency_head"}
        ),
        Fact(at(30), "4", "consultation.replied", {**base, "decision": "agree"}),
        Fact(at(40), "5", "consultation.reminded", base),
    ]
    row = fold_request(rid, fs)
    assert row is not None
    assert row["status"] == "replied" and row["closed_at"] == at(30)
    assert row["reminders"] == 2 and row["escalations"] == 1 and row["decision"] == "agree"


def test_agencies_and_masking() -> None:
    data = {
        "applicant": {"name": "Nguyễn Văn An", "phone": "0912345678", "email": "an@example.vn"},
        "lead_agency": "000.00.06.H29",
        "consult": [{"agency_id": "000.02.30.H29"}],
        "lookup_code_sealed": "abc",
        "recipient": "an@example.vn",
    }
    assert domain.agencies_in(data, CODE) == ["000.00.01.H29", "000.00.06.H29", "000.02.30.H29"]
    masked = domain.mask_data(data)
    text = json.dumps(masked, ensure_ascii=False)
    assert "Văn An" not in text and "0912345678" not in text and "an@example" not in text
    assert masked["applicant"]["phone"] == "*******678" and masked["lookup_code_sealed"] == "***"


def test_a_dead_letter_is_read_raw_with_field_level_reasons() -> None:
    detail = json.dumps([{"field": "data.recipient", "reason": "Field required"}])
    headers = [
        ("dlq_reason", b"invalid"),
        ("dlq_detail", detail.encode()),
        ("dlq_consumer", b"lienthong-intake"),
        ("dlq_topic", b"lienthong.notification.v1"),
        ("dlq_partition", b"2"),
        ("dlq_offset", b"41"),
        ("dlq_stored_id", b"7"),
    ]
    row = domain.dead_letter_row(
        "intake", 0, 5, CODE.encode(), b"\xff not json", headers, 1_700_000_000_000
    )
    assert row["id"] == "intake-0-5" and row["reason"] == "invalid" and row["dossier_code"] == CODE
    assert row["writer"] == "intake" and row["forged"] is None
    assert row["errors"] == [{"field": "data.recipient", "reason": "Field required"}]
    assert row["origin_offset"] == 41 and row["stored_id"] == 7 and not row["stored_elsewhere"]
    big = domain.dead_letter_row(
        "intake", 0, 6, None, b'{"stored_id": 7}', [*headers, ("dlq_value", b"stored")], None
    )
    assert big["stored_elsewhere"] and big["errors"][0]["field"] == "data.recipient"
    plain = domain.dead_letter_row(
        "intake", 0, 7, None, b"x", [("dlq_detail", b"ValueError: boom")], None
    )
    assert plain["errors"] == [{"field": "", "reason": "ValueError: boom"}]
    assert plain["forged"]  # no consumer, no origin, no stored copy: not what intake writes
    assert domain.replay_headers({"dlq_reason": "x", "event_type": "y"}) == {"event_type": "y"}


def test_a_dead_letter_claiming_an_origin_its_writer_could_not_have_had_is_forged() -> None:
    """What notification writes on its own dead-letter topic cannot come from intake's
    group, nor from a topic notification does not read."""
    claims = [
        ("dlq_consumer", b"lienthong-consultation"),
        ("dlq_topic", CONSULTATION.name.encode()),
        ("dlq_stored_id", b"3"),
    ]
    row = domain.dead_letter_row("notification", 0, 1, CODE.encode(), b"{}", claims, None)
    assert row["forged"] and "lienthong-consultation" in row["forged"]
    own_group = [("dlq_consumer", b"lienthong-notification"), *claims[1:]]
    assert (
        domain.dead_letter_row("notification", 0, 2, None, b"{}", own_group, None)["forged"] is None
    )
    catalogue = [own_group[0], ("dlq_topic", b"lienthong.catalogue.v1"), claims[2]]
    row = domain.dead_letter_row("notification", 0, 3, None, b"{}", catalogue, None)
    assert row["forged"] and "lienthong.catalogue.v1" in row["forged"]


def test_the_console_reads_everything_writes_only_replays_and_joins_no_other_group() -> None:
    rules = {str(a) for a in acl.acls_for("console", "console", "t1.")}
    for name in ("intake", "routing", "notification", "console"):
        assert f"User:console Read topic t1.{DEAD_LETTERS[name].name}" in rules
    for name in ("intake", "routing", "consultation", "notification"):
        assert f"User:console Write topic t1.{REPLAYS[name].name}" in rules
    writes = {r for r in rules if " Write topic " in r}
    assert writes == {
        *(f"User:console Write topic t1.{t.name}" for t in REPLAYS.values()),
        f"User:console Write topic t1.{DEAD_LETTERS['console'].name}",
    }
    assert f"User:console Write topic t1.{DOSSIER.name}" not in rules
    assert f"User:console Write topic t1.{CONSULTATION.name}" not in rules
    assert "User:console Read group t1.lienthong-console" in rules
    assert "User:console Describe group t1.lienthong-intake" in rules
    assert "User:console Read group t1.lienthong-intake" not in rules
    assert domain.month_of(datetime(2025, 11, 30, 18, 0, tzinfo=UTC)) == "2025-12"
