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
def admin_database_url(infra_dir: Path) -> Iterator[str]:
    with infra.postgres(infra_dir) as (url, _kind):
        yield url


@pytest.fixture
async def database_url(admin_database_url: str) -> str:
    return await infra.fresh_database(admin_database_url)


@pytest.fixture
def topic_prefix() -> str:
    return infra.topic_prefix()
