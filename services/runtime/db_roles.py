"""Who may do what in PostgreSQL: each service its own login role, owning its schema only.

``provision`` runs with the administrator's DSN (a superuser) before the services start,
as the broker's ACLs are made with its admin principal (``services/runtime/acl.py``): for
each service a ``LOGIN`` role ``lienthong_<service>`` (no superuser, no ``CREATEDB``, no
``CREATEROLE``) with the password it is given, the schema of the service owned by that
role (and every table, sequence, function and type in it, so data a superuser migrated
before keeps working), ``CONNECT`` on the database, and ``CREATE`` on ``public`` taken
from everyone. A service then connects with its own DSN (``{SERVICE}_DATABASE_URL``, see
``ServiceSettings.for_service``) and applies its own migrations as the schema's owner: it
can neither read nor write another service's schema nor create anything outside its own.

Roles are cluster-wide, databases are not: the step is idempotent (a role is created when
missing, its attributes and password set every time), so it runs again for every database
of the same server (each test's). Passwords reach the server as SCRAM-SHA-256 verifiers,
never in clear (no statement log shows them).

``python -m services.runtime.db_roles`` runs it for a deployment: the admin DSN in
``DATABASE_URL``, each service's password in ``{SERVICE}_DATABASE_PASSWORD``; it prints
nothing secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg

SERVICES = ("intake", "routing", "consultation", "notification", "console")
ROLE_PREFIX = "lienthong_"
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def role_name(service: str, prefix: str = ROLE_PREFIX) -> str:
    """The login role of ``service``: ``lienthong_intake``..."""
    name = f"{prefix}{service}"
    if not _NAME.match(name):
        raise ValueError(f"not a plain PostgreSQL name: {name!r}")
    return name


def url_variable(service: str) -> str:
    """The environment variable holding ``service``'s own DSN."""
    return f"{service.upper()}_DATABASE_URL"


def password_variable(service: str) -> str:
    return f"{service.upper()}_DATABASE_PASSWORD"


def generate_passwords(services: Iterable[str] = SERVICES) -> dict[str, str]:
    return {s: secrets.token_urlsafe(24) for s in services}


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), computed here so
    the password itself never reaches the server."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def with_login(dsn: str, user: str, password: str) -> str:
    """``dsn`` (URL form) with another user and password: same server, same database."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "password")]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/")))


def service_urls(
    admin_dsn: str, passwords: Mapping[str, str], prefix: str = ROLE_PREFIX
) -> dict[str, str]:
    """Each service's DSN: its role on the admin DSN's server and database."""
    return {s: with_login(admin_dsn, role_name(s, prefix), pw) for s, pw in passwords.items()}


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain PostgreSQL name: {name!r}")
    return f'"{name}"'


# Two provisioners of the same server at once (databases of different tests) may both
# create a role, or update the same catalogue row ("tuple concurrently updated").
_RACES = (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError, asyncpg.InternalServerError)


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str, superuser: bool) -> None:
    verifier = scram_verifier(password)
    assert "'" not in verifier
    # attributes only a superuser may set; a CREATEROLE admin makes roles without them
    strict = " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" if superuser else ""
    for attempt in range(5):
        try:
            if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {_ident(role)}")
            await conn.execute(
                f"ALTER ROLE {_ident(role)} WITH LOGIN INHERIT{strict} PASSWORD '{verifier}'"
            )
            if not superuser:  # to hand it a schema, the admin must be able to act as it
                await conn.execute(f"GRANT {_ident(role)} TO CURRENT_USER")
            return
        except _RACES:
            if attempt == 4:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


async def _own_schema(conn: asyncpg.Connection, schema: str, role: str) -> None:
    owner = await conn.fetchval(
        "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
        " WHERE n.nspname = $1",
        schema,
    )
    if owner is None:
        await conn.execute(
            f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)} AUTHORIZATION {_ident(role)}"
        )
    elif owner != role:
        await conn.execute(f"ALTER SCHEMA {_ident(schema)} OWNER TO {_ident(role)}")
    await conn.execute(f"REVOKE ALL ON SCHEMA {_ident(schema)} FROM PUBLIC")
    await _reassign(conn, schema, role)


_NOT_OWNED = "n.nspname = $1 AND {owner} <> (SELECT oid FROM pg_roles WHERE rolname = $2)"
_RELATIONS = {
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
}


async def _reassign(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Hand ``role`` what another role (the superuser of older runs) created in ``schema``:
    relations (their indexes, triggers and serial sequences follow), free-standing
    sequences, functions and types."""
    statements: list[str] = []
    relations = await conn.fetch(
        "SELECT c.relkind::text AS relkind, format('%I.%I', n.nspname, c.relname) AS name"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind::text = ANY($3::text[])"
        " AND " + _NOT_OWNED.format(owner="c.relowner"),
        schema,
        role,
        list(_RELATIONS),
    )
    statements += [
        f"ALTER {_RELATIONS[r['relkind']]} {r['name']} OWNER TO {_ident(role)}" for r in relations
    ]
    for statement in statements:
        await conn.execute(statement)
    # sequences of no column (those of a column moved with their table)
    sequences = await conn.fetch(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        " AND d.objid = c.oid AND d.deptype IN ('a', 'i'))"
        " AND " + _NOT_OWNED.format(owner="c.relowner"),
        schema,
        role,
    )
    routines = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS name FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
        + _NOT_OWNED.format(owner="p.proowner"),
        schema,
        role,
    )
    # enums, domains, ranges and free-standing composite types (not a table's row type,
    # which moved with it; array and multirange types follow their element type)
    types = await conn.fetch(
        "SELECT t.typtype::text AS typtype, format('%I.%I', n.nspname, t.typname) AS name"
        " FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE (t.typtype IN ('e', 'd', 'r')"
        " OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))"
        " AND " + _NOT_OWNED.format(owner="t.typowner"),
        schema,
        role,
    )
    tail = [f"ALTER SEQUENCE {r['name']} OWNER TO {_ident(role)}" for r in sequences]
    tail += [f"ALTER ROUTINE {r['name']} OWNER TO {_ident(role)}" for r in routines]
    tail += [
        f"ALTER {'DOMAIN' if r['typtype'] == 'd' else 'TYPE'} {r['name']} OWNER TO {_ident(role)}"
        for r in types
    ]
    for statement in tail:
        await conn.execute(statement)


async def provision(
    admin_dsn: str,
    passwords: Mapping[str, str],
    *,
    schemas: Mapping[str, str] | None = None,
    prefix: str = ROLE_PREFIX,
) -> dict[str, str]:
    """Roles, schemas and grants for ``passwords``' services in the database of
    ``admin_dsn`` (``schemas`` maps a service to its schema, default its name); returns
    each service's DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        superuser = bool(
            await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
        roles = {s: role_name(s, prefix) for s in passwords}
        for service, role in roles.items():
            await _ensure_role(conn, role, passwords[service], superuser)
        async with conn.transaction():
            # one provisioner of this database at a time
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('lienthong.provision', 0))"
            )
            if await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = 'public'"):
                await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            for service, role in roles.items():
                grant = await conn.fetchval(
                    "SELECT format('GRANT CONNECT ON DATABASE %I TO %I',"
                    " current_database(), $1::text)",
                    role,
                )
                await conn.execute(grant)
                await _own_schema(conn, (schemas or {}).get(service, service), role)
    finally:
        await conn.close()
    return service_urls(admin_dsn, passwords, prefix)


def main(argv: list[str] | None = None) -> int:
    """``python -m services.runtime.db_roles [SERVICE...]``: provision a deployment's
    database (``DATABASE_URL``, the admin) for the services whose
    ``{SERVICE}_DATABASE_PASSWORD`` is set (an init job of a chart, say)."""
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        print("DATABASE_URL (the administrator's DSN) is required", file=sys.stderr)
        return 2
    wanted = (argv if argv is not None else sys.argv[1:]) or list(SERVICES)
    passwords = {
        s: os.environ[password_variable(s)] for s in wanted if os.environ.get(password_variable(s))
    }
    missing = sorted(set(wanted) - set(passwords))
    if missing:
        print(
            f"no password for {missing}: set {', '.join(map(password_variable, missing))}",
            file=sys.stderr,
        )
        return 2
    asyncio.run(provision(admin, passwords))
    for s in passwords:
        print(f"{s}: role {role_name(s)} owns schema {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
