"""asyncpg pool per service schema, and SQL migrations applied at start."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"

# SQLSTATE classes that say "not now", never "not this": connection exceptions (08),
# transaction rollbacks such as serialization failures and deadlocks (40), insufficient
# resources such as too many connections (53), operator intervention such as admin
# shutdown or "cannot connect now" (57), system and I/O errors (58), and lock not
# available (55P03).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_SQLSTATES = ("55P03",)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed: the database or the network is
    away or busy, not the input at fault. Such failures are retried, never dead-lettered."""
    if isinstance(
        exc,
        (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError),
    ):
        return True  # includes a pooled connection left mid-operation by a lost server
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    return False


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: json.dumps(v, ensure_ascii=False),
            decoder=json.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection is reset with, instead of asyncpg's default (UNLISTEN
    *, CLOSE ALL, RESET ALL, pg_advisory_unlock_all: one round trip per release, about
    seven per dossier). Nothing here leaves session state on a pooled connection: LISTEN
    has its own connection (``Waker``), settings are ``SET LOCAL``, locks are transaction
    locks, and the outbox relay, the one holder of a session lock, unlocks it before it
    gives its connection back. asyncpg still rolls back a transaction left open."""


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` first on their search path."""
    await ensure_schema(dsn, schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": f"{schema},public", "timezone": "UTC"},
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def ensure_schema(dsn: str, schema: str) -> None:
    """Create ``schema`` unless it exists. A service's own role finds it made for it by
    ``services.runtime.db_roles.provision`` (it may not create schemas: no ``CREATE`` on
    the database); a deployment with one DSN for all makes it here."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            return  # CREATE SCHEMA IF NOT EXISTS checks the privilege before existence
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except asyncpg.UniqueViolationError:
        pass  # two replicas raced to create it
    finally:
        await conn.close()


async def insert_row(
    conn: asyncpg.Connection, table: str, row: dict[str, Any], *, on_conflict: str | None = None
) -> bool:
    """INSERT one row from a dict; False if ``on_conflict`` (e.g. ``"(id)"`` or ``""``) made
    it a no-op. Column and table names come from code, never from input."""
    cols = ", ".join(row)
    params = ", ".join(f"${i + 1}" for i in range(len(row)))
    sql = f"INSERT INTO {table}({cols}) VALUES ({params})"
    if on_conflict is not None:
        sql += f" ON CONFLICT {on_conflict} DO NOTHING"
    inserted = await conn.fetchval(sql + " RETURNING true", *row.values())
    return bool(inserted)


async def update_row(
    conn: asyncpg.Connection,
    table: str,
    key: str,
    value: Any,
    fields: dict[str, Any],
    *,
    touch: str | None = None,
) -> None:
    """UPDATE the row whose ``key`` is ``value`` with ``fields`` (and ``touch`` = now())."""
    sets = [f"{k} = ${i + 2}" for i, k in enumerate(fields)]
    if touch:
        sets.append(f"{touch} = now()")
    await conn.execute(
        f"UPDATE {table} SET {', '.join(sets)} WHERE {key} = $1", value, *fields.values()
    )


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)


async def migrate(pool: asyncpg.Pool, schema: str, *dirs: Path) -> list[str]:
    """Apply every ``NNNN_*.sql`` file not yet applied, in name order, once per schema.

    Runtime tables (outbox, inbox, timers) come first; an advisory lock keeps two
    replicas starting together from applying the same file twice.
    """
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for directory in (RUNTIME_MIGRATIONS, *dirs):
            for path in sorted(directory.glob("*.sql")):
                name = f"{directory.parent.name}/{path.name}"
                if name in done:
                    continue
                await conn.execute(path.read_text("utf-8"))
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", name)
                applied.append(name)
    return applied
