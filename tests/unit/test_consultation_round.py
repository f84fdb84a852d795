"""The consultation round aggregate and the canonical form replies are signed over."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from contracts.events import Decision, Outcome
from services.consultation import domain
from services.consultation.domain import RequestState, Round, Status

T = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _round(*statuses: Status) -> Round:
    return Round(
        code="000.00.16.H29-261201-0001",
        opened_at=T,
        requests=[
            RequestState(uuid.UUID(int=i + 1), f"000.00.0{i}.H29", s, None)
            for i, s in enumerate(statuses)
        ],
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


def test_an_ended_round_never_opens_and_remembers_the_first_end() -> None:
    rnd = Round(code="000.00.16.H29-261201-0002")
    assert rnd.may_open()
    assert rnd.end("dossier.withdrawn", "rút hồ sơ", T) == []
    assert not rnd.may_open() and rnd.ended_at == T
    rnd.end("dossier.stopped", "dừng", T + timedelta(hours=1))
    assert (rnd.ended_by, rnd.ended_at) == ("dossier.withdrawn", T)
    assert rnd.complete(T) is None  # never opened: nothing to complete


def test_ending_cancels_what_is_answerable_and_completes_once() -> None:
    rnd = _round(Status.OPEN, Status.LAPSED, Status.REPLIED)
    rnd.requests[2].decision = "agree"
    cancelled = rnd.end("dossier.stopped", "dừng", T)
    assert [r.id.int for r in cancelled] == [1, 2]
    outcomes = rnd.complete(T)
    assert outcomes is not None
    assert [o.outcome for o in outcomes] == [Outcome.CANCELLED, Outcome.CANCELLED, Outcome.REPLIED]
    assert outcomes[2].decision is Decision.AGREE
    assert rnd.complete(T) is None and rnd.completed_at == T


def test_a_round_completes_only_when_every_request_has_an_outcome() -> None:
    rnd = _round(Status.OPEN, Status.LAPSED)
    rnd.settle(uuid.UUID(int=1), Status.REPLIED, "disagree")
    assert rnd.complete(T) is None  # a lapsed request is still waiting
    rnd.settle(uuid.UUID(int=2), Status.DEEMED_CONSENT, "agree")
    outcomes = rnd.complete(T)
    assert outcomes is not None and len(outcomes) == 2
