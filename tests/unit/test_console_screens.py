"""Console screens rendered without a stack (issue 24, the operator's console): the
original appointment beside an apology's new one, agencies by name, request statuses in
Vietnamese, and errors as pages."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from contracts import console as c
from services.console import pages

CODE = "000.00.01.H29-261201-0001"


def _summary(**kw: object) -> c.DossierSummary:
    base: dict[str, object] = {
        "code": CODE,
        "agency": "000.00.06.H29",
        "receiving_agency": "000.00.01.H29",
        "lead_agency": "000.00.06.H29",
        "procedure_code": "1.009972",
        "procedure_name": "Cấp giấy phép xây dựng",
        "channel": 1,
        "online": False,
        "state": "processing",
        "portal_status": 4,
        "received_at": datetime(2026, 12, 1, 2, tzinfo=UTC),
        "appointment_at": datetime(2026, 12, 29, 10, tzinfo=UTC),
        "legal_appointment_at": datetime(2026, 12, 21, 10, tzinfo=UTC),
        "step_deadline_at": None,
        "finished_at": None,
        "returned_at": None,
        "timeliness": None,
        "apologies": 1,
        "supplement_requests": 0,
        "overdue_steps": 1,
        "events": 9,
    }
    base.update(kw)
    return c.DossierSummary.model_validate(base)


def _render(summary: c.DossierSummary) -> str:
    t = c.DossierTimeline(
        code=CODE, dossier=summary, events=[], links=[], correlations=[], opinion_requests=[]
    )
    return (
        pages.environment()
        .get_template("dossier.html.j2")
        .render(who=None, dev=False, path="/dossiers", t=t, chain="")
    )


def test_the_original_appointment_stands_beside_the_apologys_new_one() -> None:
    page = _render(_summary())
    assert "Hẹn trả theo quy định" in page and "21/12/2026 17:00" in page
    assert "Hẹn lại sau xin lỗi" in page and "29/12/2026 17:00" in page
    plain = _render(
        _summary(apologies=0, legal_appointment_at=datetime(2026, 12, 29, 10, tzinfo=UTC))
    )
    assert "Hẹn lại sau xin lỗi" not in plain


def test_agencies_by_name_and_request_statuses_in_vietnamese() -> None:
    assert (
        pages.agency_label("000.00.06.H29") == "Sở Xây dựng Thành phố Hồ Chí Minh (000.00.06.H29)"
    )
    assert pages.agency_label("999.99.99.H99") == "999.99.99.H99"
    assert pages.REQUEST_STATUS["deemed_consent"] == "Được coi là đã đồng ý"
    assert pages.REQUEST_STATUS["lapsed"].startswith("Quá hạn")


def test_an_error_is_a_page_naming_the_field_in_vietnamese() -> None:
    request = Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    )
    answer = pages.error_page(
        request,
        422,
        {"detail": "invalid request", "errors": [{"field": "query.type", "reason": "x"}]},
    )
    body = bytes(answer.body).decode()
    assert answer.status_code == 422 and "Dữ liệu không hợp lệ" in body
    assert "Loại sự kiện" in body and "invalid request" not in body
