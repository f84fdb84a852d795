"""`make run`: the whole system on one machine.

Starts embedded PostgreSQL and Apache Kafka on the JDK (unless DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS point elsewhere; both keep their data under .run/), an SMTP sink,
gives each service its own PostgreSQL role owning only its schema (as the admin of
DATABASE_URL or of the embedded server; passwords in .run/pg-credentials.env, 0600),
creates the topics, starts the national portal and SMS gateway simulators (journals under
.run/), runs the four services as separate processes under honcho, waits until each is
consuming, prints where to look, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from honcho.manager import Manager
from rich.console import Console

from deploy.kafka import KafkaUnavailable, LocalKafka, kafka_version, write_private
from deploy.local import (
    DEFAULT_PORTS,
    SERVICES,
    LocalBroker,
    SmtpSink,
    console_env,
    embedded_postgres,
    local_broker,
    provision_postgres,
    service_env,
    stored_database_passwords,
    wait_ready,
    write_database_credentials,
)
from deploy.ports import free_port, port_is_free
from deploy.simulators import KINDS, Accounts, Simulator, start_all
from services.runtime import auth, db_roles
from services.runtime.acl import grant_from_env
from services.runtime.broker import ensure_topics
from services.runtime.clock import SystemClock
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
# the services' PostgreSQL passwords (kept) and DSNs (this run's), mode 0600
PG_CREDENTIALS = RUN / "pg-credentials.env"
# service port, admin port of each simulator (free ones instead when these are taken)
SIMULATOR_PORTS = {"portal": (8090, 8091), "sms": (8092, 8093)}
console = Console(stderr=True, soft_wrap=True)

EXAMPLE = """{
  "procedure_code": "1.009972", "channel": 1,
  "applicant": {"name": "Công ty TNHH Xây dựng Minh Long", "object_type": 2,
                "id_number": "0101234567", "phone": "0912345678",
                "email": "minhlong@example.vn"},
  "summary": "Xin cấp phép xây dựng tòa nhà văn phòng 9 tầng",
  "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}]
}"""


def main() -> int:
    started = time.monotonic()
    RUN.mkdir(exist_ok=True)
    ports = {s: DEFAULT_PORTS[s] for s in SERVICES}
    busy = [f"{s}:{p}" for s, p in ports.items() if not port_is_free(p)]
    if busy:
        console.print(f"[red]ports in use: {busy}; is another `make run` going?[/]")
        return 1
    smtp = SmtpSink(port=8025 if port_is_free(8025) else 0, folder=RUN / "mail")
    kafka = local_broker(RUN, 19092 if port_is_free(19092) else None)
    sims = Accounts.dev().simulators(
        clock_file=RUN / "clock-offset",
        folder=RUN,
        ports={kind: (_free(a), _free(b)) for kind, (a, b) in SIMULATOR_PORTS.items()},
    )
    try:
        return _run(started, ports, smtp, kafka, sims)
    finally:
        for sim in sims.values():
            sim.stop()
        smtp.stop()
        kafka.stop()  # a no-op unless it was started
        console.print("stopped")


def _run(
    started: float,
    ports: dict[str, int],
    smtp: SmtpSink,
    kafka: LocalBroker,
    sims: dict[str, Simulator],
) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database_url = os.environ.get("DATABASE_URL")
    started_here = not bootstrap
    with ThreadPoolExecutor(1) as pool:  # the broker's JVM starts while PostgreSQL does
        pending = None
        if not bootstrap:
            if isinstance(kafka, LocalKafka):
                console.print(f"[bold]starting Apache Kafka {kafka_version()}[/] in .run/kafka")
            else:
                console.print("[yellow]starting Tansu (opt-in, limited)[/]")
            pending = pool.submit(kafka.start)
        if not database_url:
            console.print("[bold]starting embedded PostgreSQL[/] in .run/pg")
            database_url = embedded_postgres(RUN / "pg")
        # each service its own role, owning only its schema; the admin (the superuser of
        # DATABASE_URL or of the embedded server) only does this, and the tools below
        passwords = stored_database_passwords(PG_CREDENTIALS)
        database_urls = provision_postgres(database_url, passwords)
        write_database_credentials(PG_CREDENTIALS, passwords, database_urls)
        if pending is not None:
            try:
                bootstrap = pending.result()
            except KafkaUnavailable as exc:
                console.print(f"[red]Apache Kafka cannot start:[/] {exc}")
                return 2
    assert bootstrap is not None
    console.print(f"broker ready on {bootstrap}")
    # where the operators' tools (python -m deploy.cli) find this system's broker and database
    # (the admin's DSN: private, as it may hold a password)
    write_private(
        RUN / "where.env", f"DATABASE_URL={database_url}\nKAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
    )
    # SASL: the local broker's credentials (admin + one principal per service), or what
    # the environment says for a cluster of its own.
    kafka_env = kafka.client_env() if isinstance(kafka, LocalKafka) and started_here else {}
    env = {**os.environ, **kafka_env}
    created = asyncio.run(ensure_topics(bootstrap, security=KafkaSecurity.from_env(None, env)))
    console.print(f"topics ready ({len(created)} created)")
    acls = asyncio.run(grant_from_env(bootstrap, env))
    if acls:
        where = kafka.credentials_path if kafka_env and isinstance(kafka, LocalKafka) else "env"
        console.print(f"SASL/SCRAM on: {len(acls)} ACLs for the services; credentials in {where}")
    smtp_port = smtp.start()
    clock_file = RUN / "clock-offset"
    start_all(sims.values())
    console.print("simulators ready: " + ", ".join(f"{k} {s.service_url}" for k, s in sims.items()))
    sim_env = Accounts.dev().service_env(sims, f"http://127.0.0.1:{ports['notification']}")

    manager = Manager()
    for name in SERVICES:
        extra = {
            **sim_env.get(name, {}),
            **kafka_env,
            "NOTIFICATION_SMTP_PORT": str(smtp_port),
            "LIENTHONG_DEV_MODE": "1",  # built-in secrets allowed, dev token minting on
            "CONSULTATION_DEMO_MINUTES": os.environ.get("DEMO_MINUTES", "0"),
            "LIENTHONG_CLOCK_FILE": str(clock_file),
            **console_env({s: f"http://127.0.0.1:{p}" for s, p in ports.items()}),
        }
        env = service_env(
            name,
            port=ports[name],
            bootstrap=bootstrap,
            database_url=database_urls[name],
            extra=extra,
        )
        manager.add_process(name, f"{sys.executable} -m services.{name}", env=env, cwd=str(ROOT))

    def announce() -> None:
        urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
        try:
            wait_ready(urls.values(), timeout=120)
        except TimeoutError as exc:
            console.print(f"[red]{exc}[/]")
            return
        took = time.monotonic() - started
        tokens = _dev_tokens()
        console.rule(f"[green]Liên thông is up in {took:.1f}s")
        for s, u in urls.items():
            console.print(f"  {s:<13} {u}/docs   (ready: {u}/ready, metrics: {u}/metrics)")
        console.print(
            f"  Console: {urls['console']}/   (the operator console: events live, dossiers,"
            " lag, dead letters, SLA, Decision 766 figures; dev mode offers an operator token)"
        )
        console.print(f"  broker        {bootstrap}   database  {database_url}")
        console.print(
            f"  each service connects as its own role ({db_roles.role_name('intake')}, …),"
            f" owning only its schema; their DSNs in {PG_CREDENTIALS} (0600)",
            soft_wrap=True,
        )
        console.print(f"  mail sink     smtp://127.0.0.1:{smtp_port}  -> {RUN / 'mail'}")
        for kind in KINDS:
            sim = sims[kind]
            console.print(
                f"  {kind + ' sim':<13} {sim.service_url}   admin {sim.admin_url}/stats"
                f"   ({sim.purpose})",
                soft_wrap=True,
            )
        accounts = Accounts.dev()
        portal, sms = sims["portal"].admin_url, sims["sms"].admin_url
        console.print(
            f"\nSimulators (portal account {accounts.portal_username}:"
            f"{accounts.portal_password}, SMS API key {accounts.sms_api_key}); what arrived:"
        )
        console.print(
            f"  curl -s {portal}/records    {portal}/log?code=CODE    {sms}/messages",
            soft_wrap=True,
        )
        console.print(
            f"  the portal down for 10 minutes of the clock: curl -s -X POST {portal}/faults"
            """ -H 'content-type: application/json' -d '{"mode": "down", "minutes": 10}'""",
            soft_wrap=True,
        )
        console.print("\nDevelopment mode (LIENTHONG_DEV_MODE=1). Tokens, valid 12 h:")
        for name, (token, who) in tokens.items():
            console.print(f"  export {name.upper()}={token}   # {who}", soft_wrap=True)
        write_tokens(RUN, {name: token for name, (token, _) in tokens.items()})
        console.print(
            f"  portal client: {auth.DEV_PORTAL_CLIENT}:{auth.DEV_PORTAL_SECRET}"
            f"   (curl -u {auth.DEV_PORTAL_CLIENT}:{auth.DEV_PORTAL_SECRET} -X POST"
            f" {urls['intake']}/v1/portal/token)",
            soft_wrap=True,
        )
        console.print("\nSubmit a dossier at the desk of agency 000.00.01.H29:")
        console.print(
            f"  curl -s -X POST {urls['intake']}/v1/dossiers -H 'content-type: application/json'"
            f" -H \"authorization: Bearer $DESK\" -d '{EXAMPLE}'",
            soft_wrap=True,
        )
        console.print(
            "Then, with CODE and the applicant's LOOKUP code (lookup_code) from the answer:"
        )
        console.print(f"  curl -s -H 'X-Lookup-Code: LOOKUP' {urls['intake']}/v1/dossiers/CODE")
        console.print(
            f"  curl -s -H 'X-Lookup-Code: LOOKUP' {urls['notification']}/v1/notifications"
            "?dossier=CODE",
            soft_wrap=True,
        )
        console.print(
            f'  curl -s -H "authorization: Bearer $OPERATOR" '
            f"{urls['consultation']}/v1/consultations?dossier=CODE",
            soft_wrap=True,
        )
        console.print("A dossier's route (steps, hand-overs, Form 05) and the officers' moves:")
        console.print(
            f'  curl -s -H "authorization: Bearer $LEAD" {urls["routing"]}/v1/routes/CODE',
            soft_wrap=True,
        )
        console.print(
            f'  curl -s -H "authorization: Bearer $LEAD" "{urls["routing"]}/v1/routes/CODE/form05'
            '?format=text"',
            soft_wrap=True,
        )
        console.print(
            f"  curl -s -X POST {urls['routing']}/v1/routes/CODE/steps/3/take -H 'content-type:"
            " application/json' -H \"authorization: Bearer $APPRAISER\" -d '{}'"
            "   # then .../complete, .../decision ($DIRECTOR), .../result-ready ($DESK),"
            " .../return",
            soft_wrap=True,
        )
        console.print("Opinion requests (agency inbox, signed replies):")
        console.print(
            f"  curl -s -X POST {urls['consultation']}/v1/dev/tokens -H 'content-type:"
            ' application/json\' -d \'{"agency_id": "000.02.30.H29"}\'   # an agency token',
            soft_wrap=True,
        )
        console.print(
            "  .venv/bin/python -m services.consultation.cli keygen --key-id pc07 --agency"
            f" 000.02.30.H29 --person 'Lê Văn Hùng' --register {urls['consultation']}"
            " --token $OPERATOR",
            soft_wrap=True,
        )
        console.print(
            "  .venv/bin/python -m services.consultation.cli sign --key-file .run/keys/pc07.pem"
            " --key-id pc07 --request REQUEST_ID --decision agree > reply.json",
            soft_wrap=True,
        )
        console.print(
            "Move time for every service: echo SECONDS > .run/clock-offset"
            "   (DEMO_MINUTES=1 make run: a working day lasts a minute)"
        )
        console.print("Watch every event live:  make watch      consumer lag:  make lag")
        console.print(
            "Kafka's own tools:  .venv/bin/python -m deploy.kafka tool topics --list"
            "   (see README: operating the broker)"
        )
        console.print("Ctrl-C stops everything.")

    threading.Thread(target=announce, daemon=True).start()
    manager.loop()
    # Ctrl-C (130) or SIGTERM (143) is a stop the user asked for, not a failure.
    return 0 if manager.returncode in (None, 130, 143) else manager.returncode


def write_tokens(folder: Path, tokens: dict[str, str]) -> list[Path]:
    """``{name}-token`` files (``deploy.cli`` reads ``operator-token``), readable by this
    user only, also when an older run left them world-readable."""
    paths = [folder / f"{name}-token" for name in tokens]
    for path, token in zip(paths, tokens.values(), strict=True):
        write_private(path, token)
    return paths


def _free(port: int) -> int:
    return port if port_is_free(port) else free_port()


def _dev_tokens() -> dict[str, tuple[str, str]]:
    """Ready-to-use development tokens, minted with the services' own (development)
    secret: an operator, a desk officer and the head of a lead agency."""
    os.environ["LIENTHONG_DEV_MODE"] = "1"
    minter = auth.Authenticator(ServiceSettings.for_service("consultation"), SystemClock())
    people = {
        "operator": ("000.00.00.H29", auth.OPERATOR, "Vận hành viên", None),
        "desk": ("000.00.01.H29", auth.OFFICER, "Cán bộ một cửa", "TNTKQ"),
        "lead": ("000.00.06.H29", auth.DEPARTMENT_HEAD, "Trưởng phòng Cấp phép", "QLHDXD"),
        "appraiser": ("000.00.06.H29", auth.OFFICER, "Chuyên viên thẩm định", "QLHDXD"),
        "director": ("000.00.06.H29", auth.AGENCY_HEAD, "Giám đốc Sở Xây dựng", None),
    }
    return {
        name: (
            minter.mint_dev(agency_id=agency, role=role, person=person, department=department),
            f"{role} of {agency}" + (f", department {department}" if department else ""),
        )
        for name, (agency, role, person, department) in people.items()
    }


if __name__ == "__main__":
    sys.exit(main())
