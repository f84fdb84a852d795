"""The load generator's dossiers are ones a desk accepts, spread over the catalogue."""

from __future__ import annotations

import unicodedata

from contracts.agencies import default_book
from contracts.api import SubmitDossier
from contracts.common import CompetenceLevel, ObjectType
from deploy.cli import parser
from deploy.load import Dossiers, percentile
from services.intake.domain import Catalogue


def test_every_dossier_is_a_valid_submission_for_its_procedure() -> None:
    catalogue = Catalogue.load()
    dossiers = Dossiers(catalogue, seed=1)
    seen: set[str] = set()
    desks: set[str] = set()
    communes = set(default_book().desks(CompetenceLevel.COMMUNE))
    for i in range(len(communes) * len(dossiers.procedures)):
        desk, body = dossiers.body(i)
        cmd = SubmitDossier.model_validate(body)
        p = next(p for p in dossiers.procedures if p.code == cmd.procedure_code)
        assert desk == cmd.receiving_agency
        if p.receiving_agency in communes:  # any commune desk receives it
            assert desk in communes
        else:
            assert desk == p.receiving_agency
        desks.add(desk)
        assert cmd.applicant.object_type in p.eligible_object_types
        mandatory = {d.code for d in p.required_documents if d.mandatory}
        assert mandatory <= {d.code for d in cmd.documents}
        assert unicodedata.is_normalized("NFC", cmd.applicant.name)
        seen.add(cmd.procedure_code)
    assert seen == {p.code for p in dossiers.procedures}
    assert len({p.code for p in catalogue.all()}) == len(seen)
    assert communes <= desks and desks == set(dossiers.desks)


def test_applicants_are_citizens_and_businesses_with_their_own_numbers() -> None:
    dossiers = Dossiers(Catalogue.load(), seed=2)
    bodies = [dossiers.body(i)[1] for i in range(200)]
    kinds = {b["applicant"]["object_type"] for b in bodies}
    assert kinds == {int(ObjectType.CITIZEN), int(ObjectType.ORGANISATION)}
    assert len({b["applicant"]["phone"] for b in bodies}) == 200


def test_percentile_by_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7


def test_cli_commands_parse() -> None:
    p = parser()
    assert p.parse_args(["load", "--rate", "100", "--duration", "60"]).rate == 100
    a = p.parse_args(["dlq", "replay", "12", "--reason", "procedure published"])
    assert (a.action, a.id, a.reason) == ("replay", "12", "procedure published")
    assert p.parse_args(["dossier", "000.00.01.H29-261203-0001"]).code.endswith("0001")
