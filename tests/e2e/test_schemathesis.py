"""schemathesis over every service's OpenAPI document, against the running services, with
valid tokens and without: no answer may be a 5xx, and every answer must be one the
document declares, in the shape it declares (status code, content type, body schema).

Positive and negative cases are generated per operation; counts per service are printed
for the closing note. Failures are collected and reported together, so one run shows
every problem.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from deploy.local import SERVICES
from tests.e2e.stack import Stack
from tests.helpers import caller_headers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))


def _fuzz(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    mode: GenerationMode,
    session: requests.Session,
    tally: collections.Counter[str],
    problems: list[str],
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=strategy, _=st.just(None))
    def run(case: Any, _: None) -> None:
        tally["requests"] += 1
        try:
            response = case.call_and_validate(
                base_url=base_url, session=session, headers=dict(headers)
            )
        except Exception as exc:  # a failed check: collect it and go on
            tally["failures"] += 1
            status = getattr(getattr(exc, "response", None), "status_code", "?")
            problems.append(f"{operation.label} [{mode.value}] {status}: {exc}"[:600])
            return
        if response.status_code >= 500:
            tally["5xx"] += 1

    run()


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(stack: Stack) -> None:
    per_service: dict[str, collections.Counter[str]] = {}
    problems: list[str] = []
    callers = caller_headers(stack)
    with requests.Session() as session:
        for name in SERVICES:
            base = stack.url(name)
            schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
            tally: collections.Counter[str] = collections.Counter()
            for result in schema.get_all_operations():
                operation = result.ok()
                tally["operations"] += 1
                for caller, headers in callers[name].items():
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        _fuzz(operation, base, headers, mode, session, tally, problems)
                        tally[f"as {caller}"] += 0
            per_service[name] = tally
    for name, tally in per_service.items():
        print(
            f"\nschemathesis {name}: {tally['operations']} operations,"
            f" {tally['requests']} requests, {tally['5xx']} answers >= 500,"
            f" {tally['failures']} check failures"
        )
    assert not problems, "\n".join(problems[:40])
