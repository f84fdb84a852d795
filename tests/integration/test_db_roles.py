"""Each service its own PostgreSQL role, owning only its schema (services/runtime/db_roles.py):
what a role may not do, migrations as the role, data a superuser migrated before handed
over, and the embedded server's socket and authentication."""

from __future__ import annotations

import importlib
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from services.runtime import db_roles
from services.runtime.db import create_pool, migrate
from services.runtime.service import ServiceSpec
from services.runtime.settings import ServiceSettings

SERVICES = db_roles.SERVICES


def spec(service: str) -> ServiceSpec:
    module = importlib.import_module(f"services.{service}.app")
    value: ServiceSpec = module.SPEC
    return value


async def migrate_as(url: str, service: str) -> list[str]:
    """What a service's lifespan does first: its pool, then its migrations."""
    pool = await create_pool(url, service, max_size=2)
    try:
        return await migrate(pool, service, spec(service).migrations)
    finally:
        await pool.close()


@pytest.fixture
async def migrated(service_database_urls: dict[str, str]) -> dict[str, str]:
    for service, url in service_database_urls.items():
        assert await migrate_as(url, service), service  # every migration, as the role
    return service_database_urls


async def test_a_service_role_owns_its_schema_and_nothing_else(
    migrated: dict[str, str], database_url: str
) -> None:
    for service, url in migrated.items():
        conn = await asyncpg.connect(url)
        try:
            me = await conn.fetchrow(
                "SELECT current_user AS name, rolsuper, rolcreatedb, rolcreaterole,"
                " rolbypassrls, rolreplication FROM pg_roles WHERE rolname = current_user"
            )
            assert me["name"] == f"lienthong_{service}"
            assert not any(me[k] for k in ("rolsuper", "rolcreatedb", "rolcreaterole"))
            assert not me["rolbypassrls"] and not me["rolreplication"]
            # its own schema: read, write, create
            await conn.execute(f"INSERT INTO {service}.schema_migrations(name) VALUES ('probe')")
            await conn.execute(f"DELETE FROM {service}.schema_migrations WHERE name = 'probe'")
            await conn.execute(f"CREATE TABLE {service}.probe (id int)")
            await conn.execute(f"DROP TABLE {service}.probe")
            # nothing of another service's, nothing in public, no schema of its own making
            for other in SERVICES:
                if other == service:
                    continue
                for sql in (
                    f"SELECT count(*) FROM {other}.outbox",
                    f"SELECT name FROM {other}.schema_migrations",
                    f"INSERT INTO {other}.schema_migrations(name) VALUES ('x')",
                    f"UPDATE {other}.outbox SET attempts = 0",
                    f"DELETE FROM {other}.outbox",
                    f"CREATE TABLE {other}.probe (id int)",
                    f"ALTER TABLE {other}.outbox ADD COLUMN probe int",
                    f"DROP TABLE {other}.outbox",
                ):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql)
            for sql in (
                "CREATE TABLE public.probe (id int)",
                "CREATE SCHEMA probe",
                f"CREATE SCHEMA probe AUTHORIZATION lienthong_{service}",
                "CREATE ROLE probe",
                "CREATE DATABASE probe",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
        finally:
            await conn.close()

    admin = await asyncpg.connect(database_url)
    try:
        owners = await admin.fetch(
            "SELECT n.nspname AS schema, r.rolname AS owner, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE n.nspname = ANY($1::text[])",
            list(SERVICES),
        )
        assert {r["schema"] for r in owners} == set(SERVICES)
        assert all(r["owner"] == f"lienthong_{r['schema']}" for r in owners), owners
        schemas = await admin.fetch(
            "SELECT nspname, nspowner::regrole::text AS owner, nspacl::text AS acl"
            " FROM pg_namespace WHERE nspname = ANY($1::text[])",
            list(SERVICES),
        )
        assert {(r["nspname"], r["owner"]) for r in schemas} == {
            (s, f"lienthong_{s}") for s in SERVICES
        }
        # privileges on a service's schema: its owner's only
        assert all(
            r["acl"] in (None, f"{{lienthong_{r['nspname']}=UC/lienthong_{r['nspname']}}}")
            for r in schemas
        ), schemas
    finally:
        await admin.close()


async def test_the_runtime_listens_and_notifies_as_the_role(
    migrated: dict[str, str],
) -> None:
    """LISTEN connections (``Waker``) use the same DSN as the pool."""
    from services.runtime.outbox import Waker

    url = migrated["routing"]
    waker = Waker(url, "routing_outbox")
    await waker.start()
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_notify('routing_outbox', '')")
        finally:
            await conn.close()
    finally:
        await waker.stop()


async def test_a_schema_a_superuser_migrated_is_handed_to_the_role(database_url: str) -> None:
    """``.run/pg`` of an older ``make run``: the services ran as the superuser."""
    pool = await create_pool(database_url, "intake", max_size=2)
    try:
        await migrate(pool, "intake", spec("intake").migrations)
        await pool.execute("CREATE FUNCTION intake.probe() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        await pool.execute("CREATE SEQUENCE intake.free_probe")
        await pool.execute("CREATE VIEW intake.view_probe AS SELECT 1 AS one")
        await pool.execute("CREATE TYPE intake.enum_probe AS ENUM ('a')")
        await pool.execute("CREATE TABLE intake.serial_probe (id bigserial PRIMARY KEY)")
        before = await pool.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await pool.close()

    urls = await db_roles.provision(database_url, {"intake": _passwords()["intake"]})
    assert not await migrate_as(urls["intake"], "intake")  # nothing new to apply
    conn = await asyncpg.connect(urls["intake"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM intake.schema_migrations") == before
        await conn.execute("INSERT INTO intake.serial_probe DEFAULT VALUES")
        assert await conn.fetchval("SELECT nextval('intake.free_probe')") == 1
        assert await conn.fetchval("SELECT intake.probe()") == 1
        not_mine = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'intake' AND c.relowner <> current_user::regrole"
            " UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE n.nspname = 'intake'"
            " AND p.proowner <> current_user::regrole"
            " UNION ALL SELECT t.typname FROM pg_type t JOIN pg_namespace n"
            " ON n.oid = t.typnamespace WHERE n.nspname = 'intake'"
            " AND t.typowner <> current_user::regrole"
        )
        assert not not_mine
        await conn.execute("DROP TABLE intake.serial_probe")  # an owner's right
    finally:
        await conn.close()


def _passwords() -> dict[str, str]:
    from deploy.local import database_passwords

    return database_passwords()


@pytest.fixture
async def own_roles(database_url: str) -> AsyncIterator[str]:
    """A role prefix of this test's own (its passwords change), dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield prefix
    admin = await asyncpg.connect(database_url)
    try:
        for s in SERVICES:
            role = db_roles.role_name(s, prefix)
            if await admin.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
                await admin.execute(f'DROP OWNED BY "{role}"')
                await admin.execute(f'DROP ROLE "{role}"')
    finally:
        await admin.close()


async def test_provisioning_again_sets_the_passwords_it_is_given(
    database_url: str, own_roles: str
) -> None:
    first = db_roles.generate_passwords()
    urls = await db_roles.provision(
        database_url, first, prefix=own_roles, schemas={s: f"{own_roles}{s}" for s in SERVICES}
    )
    again = {**first, "routing": "another-password-0123456789"}
    urls2 = await db_roles.provision(
        database_url, again, prefix=own_roles, schemas={s: f"{own_roles}{s}" for s in SERVICES}
    )
    assert urls2["intake"] == urls["intake"]
    conn = await asyncpg.connect(urls2["routing"])
    assert await conn.fetchval("SELECT current_user") == f"{own_roles}routing"
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(urls["routing"])  # the old one no longer opens
    # the verifier reached the server, never the password
    admin = await asyncpg.connect(database_url)
    try:
        stored = await admin.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", f"{own_roles}routing"
        )
    finally:
        await admin.close()
    assert stored.startswith("SCRAM-SHA-256$4096:") and again["routing"] not in stored


def test_a_dsn_takes_the_role_on_the_same_server() -> None:
    socket = "postgresql://postgres:@/t_1?host=/run/pg"
    assert db_roles.with_login(socket, "lienthong_intake", "p/w@") == (
        "postgresql://lienthong_intake:p%2Fw%40@/t_1?host=/run/pg"
    )
    tcp = "postgresql://test:test@localhost:5432/test?sslmode=require&user=x&password=y"
    assert db_roles.with_login(tcp, "lienthong_console", "pw") == (
        "postgresql://lienthong_console:pw@localhost:5432/test?sslmode=require"
    )


def test_a_service_reads_its_own_dsn_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://shared@/db")
    monkeypatch.setenv("INTAKE_DATABASE_URL", "postgresql://lienthong_intake:pw@/db")
    assert ServiceSettings.for_service("intake").database_url.startswith(
        "postgresql://lienthong_intake"
    )
    assert ServiceSettings.for_service("routing").database_url == "postgresql://shared@/db"


async def test_the_embedded_server_is_private(
    postgres_server: tuple[str, str], service_database_urls: dict[str, str]
) -> None:
    url, kind = postgres_server
    if kind != "embedded":
        pytest.skip(f"checks the embedded server's own set-up; this one is {kind}")
    socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
    assert set(socket_modes(socket_dir)) == {0o700}
    admin = await asyncpg.connect(url)
    try:
        assert await admin.fetchval("SHOW unix_socket_permissions") == "0700"
        hba = Path(await admin.fetchval("SHOW hba_file"))
    finally:
        await admin.close()
    rules = hba_rules(hba)
    assert not [r for r in rules if "trust" in r], rules
    # TYPE DATABASE USER [ADDRESS] METHOD [OPTIONS]: the superuser by peer, others by SCRAM
    assert {(r[0], r[2], r[3]) for r in rules if r[0] == "local"} == {
        ("local", "postgres", "peer"),
        ("local", "all", "scram-sha-256"),
    }
    assert {r[4] for r in rules if r[0] == "host"} == {"scram-sha-256"}
    # no password, a wrong one: refused
    good = service_database_urls["intake"]
    for bad in (
        db_roles.with_login(good, "lienthong_intake", "wrong"),
        good.replace(f":{_passwords()['intake']}@", "@"),
    ):
        with pytest.raises(
            (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
        ):
            await asyncpg.connect(bad)


def socket_modes(folder: Path) -> list[int]:
    return [stat.S_IMODE(os.stat(p).st_mode) for p in folder.glob(".s.PGSQL.*") if p.is_socket()]


def hba_rules(path: Path) -> list[list[str]]:
    """pg_hba.conf's rules, read here rather than through pg_hba_file_rules: the server's
    user may not reach the file's folder while a concurrent pytest session has put its
    parent back to 0700."""
    lines = (line.split("#", 1)[0].split() for line in path.read_text().splitlines())
    return [fields for fields in lines if fields]
