"""The catalogue as an official at a Hồ Chí Minh City public-service centre would check it:
national codes and names, the competent body after 1 July 2025, time units as the law
states them, and a source next to every figure. Test names carry the legal citation."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from contracts.agencies import AgencyBook, AgencyError, Line, default_book
from contracts.common import CompetenceLevel, Procedure, StepKind, TimeUnit
from services.intake.domain import Catalogue, CatalogueError
from services.intake.portal import national_procedure_code

TODAY = date(2026, 11, 23)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def book() -> AgencyBook:
    return default_book()


def current(catalogue: Catalogue, code: str) -> Procedure:
    return catalogue.in_force(code, TODAY)


@pytest.mark.parametrize(
    ("code", "name", "level", "lead"),
    [
        ("1.001612", "Đăng ký thành lập hộ kinh doanh", "commune", "000.02.50.H29"),
        ("2.000720", "Đăng ký thay đổi nội dung đăng ký hộ kinh doanh", "commune", "000.02.50.H29"),
        ("1.000894", "Đăng ký kết hôn", "commune", "000.00.50.H29"),
        ("1.001193", "Đăng ký khai sinh", "commune", "000.00.50.H29"),
        ("2.000635", "Cấp bản sao trích lục hộ tịch", "commune", "000.00.50.H29"),
        (
            "1.009973",
            "Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
            "commune",
            "000.00.50.H29",
        ),
        ("1.011471", "Cấp Giấy phép bán lẻ rượu", "commune", "000.02.50.H29"),
        ("1.005370", "Đăng ký thành lập công ty TNHH một thành viên", "province", "000.01.05.H29"),
    ],
)
def test_codes_names_and_competence_after_1_july_2025__decree_168_2025_and_two_level_government(
    catalogue: Catalogue, code: str, name: str, level: str, lead: str
) -> None:
    p = current(catalogue, code)
    assert p.name == name
    assert p.level is CompetenceLevel(level)
    assert p.lead_agency == lead


def test_no_code_is_reused_for_another_procedure__national_database(catalogue: Catalogue) -> None:
    names = {code: {p.name for p in ps} for code, ps in catalogue.versions.items()}
    assert all(len(n) == 1 for n in names.values())
    assert "2.000908" not in names  # "copies from the original register", not a criminal record
    assert "1.001022" not in names  # recognition of parent and child, not marriage
    assert "2.001199" not in names  # household-business change is 2.000720


def test_decree_63_2024_group_is_its_own_entry_of_work_steps_not_opinions__decree_63_2024(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    birth = current(catalogue, "1.001193")
    group = current(catalogue, "3.000722")
    assert not birth.group  # plain birth registration: the ward alone, no group
    assert {s.agency_id for s in birth.steps} == {birth.receiving_agency, birth.lead_agency}
    assert group.group and "63/2024" in group.group
    assert not group.consultations
    parts = [s for s in group.steps if s.kind in (StepKind.APPROVE, StepKind.WORK)]
    assert [book.get(s.agency_id).name for s in parts] == [
        "Ủy ban nhân dân phường Sài Gòn",
        "Công an phường Sài Gòn",
        "Bảo hiểm xã hội Thành phố Hồ Chí Minh",
    ]
    assert all(s.produces for s in parts)


def test_tax_and_social_insurance_are_steps_with_results__decree_168_2025(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    company = current(catalogue, "1.005370")
    assert not company.consultations
    vertical = [s for s in company.steps if book.get(s.agency_id).vertical]
    assert {book.get(s.agency_id).name for s in vertical} == {
        "Thuế Thành phố Hồ Chí Minh",
        "Bảo hiểm xã hội Thành phố Hồ Chí Minh",
    }
    assert all(s.produces for s in vertical)


def test_criminal_record_is_issued_by_provincial_police_in_10_or_15_days__law_on_judicial_records_art_48_1(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    p = current(catalogue, "2.000488")
    assert book.get(p.lead_agency).line is Line.VERTICAL
    assert book.get(p.lead_agency).parent == "000.00.30.H29"
    assert (p.processing_time.value, p.processing_time.unit) == (10, TimeUnit.CALENDAR_DAYS)
    assert p.processing_time_with_verification is not None
    assert (
        p.processing_time_with_verification.value,
        p.processing_time_with_verification.unit,
    ) == (
        15,
        TimeUnit.CALENDAR_DAYS,
    )
    assert "Điều 48" in (p.processing_time.legal_basis or "")


@pytest.mark.parametrize(("code", "days"), [("1.009972", 20), ("1.009973", 15)])
def test_building_permits_are_in_calendar_days__law_on_construction_art_102_1(
    catalogue: Catalogue, code: str, days: int
) -> None:
    t = current(catalogue, code).processing_time
    assert (t.value, t.unit) == (days, TimeUnit.CALENDAR_DAYS)
    assert "Điều 102" in (t.legal_basis or "")


@pytest.mark.parametrize("code", ["1.001193", "1.000894", "2.000635"])
def test_within_the_day_procedures_are_not_4_working_hours__law_on_civil_status(
    catalogue: Catalogue, code: str
) -> None:
    assert current(catalogue, code).processing_time.unit is TimeUnit.WITHIN_THE_DAY


def test_marriage_with_verification_takes_up_to_5_working_days__law_on_civil_status_art_18_2(
    catalogue: Catalogue,
) -> None:
    v = current(catalogue, "1.000894").processing_time_with_verification
    assert v is not None and (v.value, v.unit) == (5, TimeUnit.WORKING_DAYS)


def test_first_land_certificate_for_individuals_at_commune_with_form_15__decree_151_2025(
    catalogue: Catalogue,
) -> None:
    p = current(catalogue, "1.013978")
    assert p.level is CompetenceLevel.COMMUNE
    assert any("Mẫu số 15" in d.name for d in p.required_documents)
    assert not any("04/ĐK" in d.name for d in p.required_documents)
    assert not p.consultations  # the tax office's figure is a step's result


def test_every_figure_has_its_source(catalogue: Catalogue) -> None:
    for p in catalogue.all():
        assert p.legal_basis, p.code
        assert p.processing_time.legal_basis, p.code
        if p.processing_time_with_verification:
            assert p.processing_time_with_verification.legal_basis, p.code
        for f in p.fees:
            assert f.legal_basis, (p.code, f.name)
        for s in p.steps:
            assert s.duration.legal_basis, (p.code, s.order)


def test_no_district_bodies_and_no_cuc_thue_after_1_july_2025(catalogue: Catalogue) -> None:
    text = yaml.safe_dump([p.model_dump(mode="json") for p in catalogue.all()], allow_unicode=True)
    for word in ("quận", "Quận", "huyện", "Huyện", "Cục Thuế thành phố", "Hà Nội"):
        assert word not in text, word


def test_every_agency_is_in_the_registry_with_one_body_per_id__qcvn_102_2016(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    assert catalogue.agencies <= book.ids()
    assert all(a.endswith(".H29") for a in catalogue.agencies)  # H29 is Hồ Chí Minh City
    assert book.province("H29").name == "Thành phố Hồ Chí Minh"


def test_registry_refuses_two_bodies_under_one_id(tmp_path: Path) -> None:
    data = yaml.safe_load(Path("contracts/reference/agencies.yaml").read_text("utf-8"))
    twin = {**data["agencies"][1], "name": "Văn phòng Đăng ký đất đai (trùng mã)"}
    data["agencies"].append(twin)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(AgencyError, match="names two bodies"):
        AgencyBook.load(tmp_path / "a.yaml")


def test_vertical_agencies_name_their_own_superior_not_the_chairman(book: AgencyBook) -> None:
    for a in book.agencies:
        if a.vertical:
            assert a.superior and "Ủy ban nhân dân" not in a.superior, a.id


def test_catalogue_refuses_an_agency_named_differently_than_the_registry(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path("services/intake/catalogue/civil.yaml").read_text("utf-8"))[:1]
    raw[0]["lead_agency_name"] = "UBND quận Cầu Giấy"
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    with pytest.raises(
        CatalogueError, match=re.escape("000.00.50.H29 is 'Ủy ban nhân dân phường Sài Gòn'")
    ):
        Catalogue.load(tmp_path)


def test_a_ministry_group_is_not_a_field_code() -> None:
    with pytest.raises(ValidationError, match="not a field code"):
        Procedure.model_validate(
            {
                **current(Catalogue.load(), "1.000894").model_dump(mode="json"),
                "field_code": "G09",
            }
        )


@pytest.mark.parametrize(
    ("sent", "national"),
    [
        ("1.001612.000.00.00.H48", "1.001612"),
        ("1.001612", "1.001612"),
        ("2.000720.000.00.50.H29", "2.000720"),
        ("1.001612.H48", "1.001612.H48"),  # not the national form: left for the catalogue to refuse
    ],
)
def test_portal_matthc_with_agency_suffix_is_normalised(sent: str, national: str) -> None:
    assert national_procedure_code(sent) == national


# --- issue 23: codes, citations and the order of the EIA round ------------------------------


def test_lien_thong_groups_carry_national_codes_not_invented_ones__decree_63_2024(
    catalogue: Catalogue,
) -> None:
    # 2.000986 (birth group) and 2.002622 (death group) are replaced by 3.000722 and
    # 2.002913 in the annex of Quyết định 3582/QĐ-UBND of Hải Phòng (secondary source);
    # "H29-LT-KHAITU" was a local code no national list knows.
    codes = set(catalogue.versions)
    assert {"3.000722", "2.002913"} <= codes
    assert not codes & {"2.000986", "2.002622", "H29-LT-KHAITU"}
    assert all(re.fullmatch(r"[0-9]\.[0-9]{6}", c) for c in codes)
    birth, death = current(catalogue, "3.000722"), current(catalogue, "2.002913")
    assert birth.name.startswith("Liên thông điện tử: đăng ký khai sinh")
    assert death.name == (
        "Liên thông điện tử: đăng ký khai tử, xóa đăng ký thường trú, giải quyết mai táng phí,"
        " tử tuất"
    )
    for p in (birth, death):
        assert "3582/QĐ-UBND" in p.legal_basis and "nguồn thứ cấp" in p.legal_basis


def test_marriage_fee_exemption_is_point_b_of_art_11_1__law_on_civil_status_2014(
    catalogue: Catalogue,
) -> None:
    (fee,) = current(catalogue, "1.000894").fees
    assert fee.amount_vnd == 0
    assert (fee.legal_basis or "").startswith("Luật Hộ tịch 2014, điểm b khoản 1 Điều 11")


@pytest.mark.parametrize("code", ["1.001193", "1.000894", "2.000635"])
def test_the_15h_rule_of_civil_status_cites_art_5_3__law_on_civil_status_2014(
    catalogue: Catalogue, code: str
) -> None:
    # "trường hợp nhận hồ sơ sau 15 giờ mà không giải quyết được ngay thì trả kết quả trong
    # ngày làm việc tiếp theo" is Art. 5(3) of the Law (official codification), not Art. 16
    # or Art. 64, which only say "ngay sau khi".
    basis = current(catalogue, code).processing_time.legal_basis or ""
    assert "khoản 3 Điều 5: nhận hồ sơ sau 15 giờ" in basis
    assert "(Luật Hộ tịch 2014, Điều 64)" not in basis and "(sau 15 giờ" not in basis


def test_eia_round_follows_the_appraisal_council_and_precedes_approval__lep_2020_art_34(
    catalogue: Catalogue,
) -> None:
    p = current(catalogue, "1.004249")
    kinds = [s.kind for s in p.steps]
    council, round_, approval = (
        kinds.index(StepKind.APPRAISE),
        kinds.index(StepKind.CONSULT),
        kinds.index(StepKind.APPROVE),
    )
    assert council < round_ < approval
    assert "Thông tư 02/2022/TT-BTNMT, Điều 16" in (p.steps[round_].duration.legal_basis or "")
