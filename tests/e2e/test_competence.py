"""Territorial competence through the running services (issue 23, item 3): a dossier of
a residence-bound commune procedure received at ward A for an applicant of ward B is
decided by ward B, one of a boundary-free procedure by ward A, a property-bound one by the
land's ward; a commune the book does not know is refused at the desk, in Vietnamese.

Time is the services' shared clock, set by ``life`` to Monday 8 March 2027 09:00."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from contracts.agencies import BodyKind, default_book
from services.runtime.clock import FileOffsetClock
from tests.e2e.stack import Stack
from tests.e2e.test_dossier_life import Life, local

pytestmark = pytest.mark.e2e
BOOK = default_book()
WARD_A, WARD_B, LAND = (BOOK.commune(c) for c in ("BEN_THANH", "TAN_DINH", "XOM_CHIEU"))
DESK_A = WARD_A.bodies[BodyKind.SERVICE_CENTRE]
UBND_A = WARD_A.bodies[BodyKind.PEOPLE_COMMITTEE]
UBND_B = WARD_B.bodies[BodyKind.PEOPLE_COMMITTEE]
APPLICANT = {
    "name": "Trần Thị Bình",
    "id_number": "079190000123",
    "email": "binh.tran@example.vn",
    "commune": WARD_B.code,  # she lives in phường Tân Định
}
MARRIAGE = {  # residence-bound: Law on Civil Status 2014, Art. 17(1)
    "procedure_code": "1.000894",
    "channel": 1,
    "receiving_agency": DESK_A,
    "applicant": APPLICANT,
    "documents": [{"code": "TK"}],
}
EXTRACT = {  # boundary-free: Law on Civil Status 2014, Art. 63(1); Decree 118/2025/NĐ-CP
    "procedure_code": "2.000635",
    "channel": 1,
    "receiving_agency": DESK_A,
    "applicant": APPLICANT,
    "documents": [{"code": "TK"}],
}


@pytest.fixture
def life(stack: Stack, http: httpx.AsyncClient, clock: FileOffsetClock) -> Life:
    lf = Life(stack, http, clock)
    lf.at(local(8, 9))
    return lf


async def test_residence_bound_by_ward_b_boundary_free_by_ward_a(life: Life) -> None:
    # residence-bound, received at ward A's desk: ward B's People's Committee decides
    await life.submit(MARRIAGE, DESK_A)
    route = await life.route_where(lambda r: r["current_step"] == 2)
    assert [s["agency_id"] for s in route["steps"]] == [DESK_A, UBND_B, UBND_B, DESK_A]
    assert route["lead_agency"] == UBND_B
    assert route["steps"][2]["agency_name"] == "Ủy ban nhân dân phường Tân Định"
    assert "phường Tân Định" in (route["steps"][1]["department_name"] or "")
    # ward A's committee has no part in it; ward B's officers and head act
    r = await life.move("steps/2/take", {}, UBND_A)
    assert r.status_code == 403, r.text
    await life.ok("steps/2/take", {}, UBND_B)
    await life.ok("steps/2/complete", {"result": "Đủ điều kiện kết hôn"}, UBND_B)
    r = await life.move("steps/3/take", {}, UBND_B, "agency_head")
    assert r.status_code in (200, 409), r.text  # taking an approval may not be needed
    await life.ok(
        "decision",
        {
            "decision": "approved",
            "documents": [{"code": "GCNKH", "name": "Giấy chứng nhận kết hôn"}],
        },
        UBND_B,
        "agency_head",
    )
    await life.ok("result-ready", {}, DESK_A)
    done = await life.route_where(lambda r: r["state"] == "result_ready")
    assert done["decision"] == "approved"
    slip = await life.form05()
    assert "Ủy ban nhân dân phường Tân Định" in slip and "phường Sài Gòn" not in slip, slip

    # boundary-free, same desk, same applicant: ward A decides
    await life.submit(EXTRACT, DESK_A)
    route = await life.route_where(lambda r: r["current_step"] == 2)
    assert [s["agency_id"] for s in route["steps"]] == [DESK_A, UBND_A, UBND_A, DESK_A]
    assert route["lead_agency"] == UBND_A


async def test_property_bound_by_the_lands_ward_and_unknown_communes_refused(
    life: Life,
) -> None:
    permit: dict[str, Any] = {
        "procedure_code": "1.009973",
        "channel": 1,
        "receiving_agency": DESK_A,
        "applicant": APPLICANT,
        "property_commune": LAND.code,
        "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
    }
    await life.submit(permit, DESK_A)
    route = await life.route_where(lambda r: r["current_step"] == 2)
    assert [s["agency_id"] for s in route["steps"]] == [
        DESK_A,
        LAND.bodies[BodyKind.ECONOMY],
        LAND.bodies[BodyKind.PEOPLE_COMMITTEE],
        DESK_A,
    ]
    dossier = await life.dossier()
    assert (
        dossier.get("lead_agency", LAND.bodies[BodyKind.PEOPLE_COMMITTEE])
        == LAND.bodies[BodyKind.PEOPLE_COMMITTEE]
    )

    intake = f"{life.stack.url('intake')}/v1/dossiers"
    for body, field in (
        ({**MARRIAGE, "applicant": {**APPLICANT, "commune": "PHU_LAM_CU"}}, "applicant.commune"),
        ({**permit, "property_commune": "KHONG_CO"}, "property_commune"),
    ):
        r = await life.http.post(intake, json=body, headers=life.who(DESK_A))
        assert r.status_code == 422, r.text
        (error,) = r.json()["errors"]
        assert error["field"] == field
        assert "không có trong danh mục" in error["reason"] and "phường" in error["reason"]
