"""Intake rules: the catalogue, codes, assessment at receipt."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.common import DocumentRef, DossierCode, ObjectType, StepKind
from services.intake import domain
from services.intake.domain import Catalogue, CatalogueError, Outcome


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def test_sample_catalogue_is_real_enough(catalogue: Catalogue) -> None:
    procedures = catalogue.all()
    assert len(procedures) >= 12
    # The desk's receive and return steps are not a part of the work: count the agencies
    # that decide, give opinions or do a part.
    doers = {
        p.code: {
            p.lead_agency,
            *(c.agency_id for c in p.consultations),
            *(s.agency_id for s in p.steps if s.kind not in (StepKind.RECEIVE, StepKind.RETURN)),
        }
        for p in procedures
    }
    interconnected = [code for code, agencies in doers.items() if len(agencies) > 1]
    assert len(interconnected) >= 4
    for code in interconnected:
        assert 2 <= len(doers[code]) <= 4, code


def test_dossier_code_format() -> None:
    assert (
        domain.dossier_code("000.00.01.H22", date(2025, 11, 24), 7) == "000.00.01.H22-251124-0007"
    )
    day = date(2025, 11, 24)
    # Past 9,999 in a day the serial widens to 5 digits; past 99,999 there is no code.
    assert domain.dossier_code("000.00.01.H22", day, 9999) == "000.00.01.H22-251124-9999"
    assert domain.dossier_code("000.00.01.H22", day, 10000) == "000.00.01.H22-251124-10000"
    assert domain.dossier_code("000.00.01.H22", day, 99999) == "000.00.01.H22-251124-99999"
    for bad in (0, 100000):
        with pytest.raises(ValueError):
            domain.dossier_code("000.00.01.H22", day, bad)
    codes = TypeAdapter(DossierCode)
    for serial in (1, 9999, 10000, 99999):
        codes.validate_python(domain.dossier_code("000.00.01.H22", day, serial))
    for wrong in ("000.00.01.H22-251124-00001", "000.00.01.H22-251124-100000"):
        with pytest.raises(ValidationError):
            codes.validate_python(wrong)  # one spelling per serial


def test_version_in_force(tmp_path: Path, catalogue: Catalogue) -> None:
    p = catalogue.in_force("1.000894", date(2026, 1, 1))
    v2 = p.model_copy(
        update={"version": 2, "effective_from": date(2026, 7, 1), "name": "Đăng ký kết hôn (mới)"}
    )
    c = Catalogue.from_procedures([p, v2])
    assert c.in_force("1.000894", date(2026, 6, 30)).version == 1
    assert c.in_force("1.000894", date(2026, 7, 1)).version == 2
    with pytest.raises(domain.UnknownProcedure):
        c.in_force("9.999999", date(2026, 7, 1))
    with pytest.raises(domain.UnknownProcedure):
        c.in_force("1.000894", date(2015, 1, 1))


def test_bad_catalogue_file_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(
        '- code: "1.000001"\n  version: 1\n  effective_from: 2024-01-01\n  name: "Thủ tục A"\n'
        '  field: "X"\n  processing_time: {value: 3}\n  receiving_agency: "BAD"\n'
        '  receiving_agency_name: "A"\n  lead_agency: "000.00.01.H22"\n  lead_agency_name: "B"\n',
        "utf-8",
    )
    with pytest.raises(
        CatalogueError, match=r"broken\.yaml: entry 1 \(code 1\.000001\), field receiving_agency"
    ):
        Catalogue.load(tmp_path)


def test_assessment(catalogue: Catalogue) -> None:
    p = catalogue.in_force("1.009972", date(2026, 1, 1))
    full = [DocumentRef(code=c) for c in ("DDN", "QSDD", "BVTK")]
    assert domain.assess(p, ObjectType.ORGANISATION, full).outcome is Outcome.RECEIVED
    short = domain.assess(p, ObjectType.ORGANISATION, full[:2])
    assert short.outcome is Outcome.SUPPLEMENT_REQUESTED
    assert [d.code for d in short.missing] == ["BVTK"]  # TDPCCC is optional
    marriage = catalogue.in_force("1.000894", date(2026, 1, 1))
    refused = domain.assess(marriage, ObjectType.ORGANISATION, [DocumentRef(code="TK")])
    assert refused.outcome is Outcome.REFUSED and refused.reasons


def test_fingerprint_ignores_key_order() -> None:
    assert domain.request_fingerprint({"a": 1, "b": [1, 2]}) == domain.request_fingerprint(
        {"b": [1, 2], "a": 1}
    )
    assert domain.request_fingerprint({"a": 1}) != domain.request_fingerprint({"a": 2})
