"""Session-wide real broker and database; per-test fresh database and topic prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import infra


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def kafka_session(infra_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The session's broker and its client environment; the test process is its admin."""
    with infra.kafka(infra_dir) as (bootstrap, _kind, env), infra.admin_environment(env):
        yield bootstrap, env


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_session: tuple[str, dict[str, str]]) -> str:
    return kafka_session[0]


@pytest.fixture(scope="session")
def kafka_env(kafka_session: tuple[str, dict[str, str]]) -> dict[str, str]:
    """SASL settings of the admin and of each service's principal (empty: PLAINTEXT)."""
    return kafka_session[1]


@pytest.fixture(scope="session")
def postgres_server(infra_dir: Path) -> Iterator[tuple[str, str]]:
    """(the superuser's URL, kind: ``env``, ``testcontainers`` or ``embedded``)."""
    with infra.postgres(infra_dir) as server:
        yield server


@pytest.fixture(scope="session")
def admin_database_url(postgres_server: tuple[str, str]) -> str:
    return postgres_server[0]


@pytest.fixture
async def database_url(admin_database_url: str) -> str:
    """The test's own database, as the superuser (the test reads every schema)."""
    return await infra.fresh_database(admin_database_url)


@pytest.fixture
async def service_database_urls(database_url: str) -> dict[str, str]:
    """Each service's role made in the test's database, owning its schema only (as
    ``make run`` and the end-to-end stack do); service name -> that role's DSN."""
    return await infra.provision_roles(database_url)


@pytest.fixture
def topic_prefix() -> str:
    return infra.topic_prefix()
