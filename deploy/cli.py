"""The operators' command line: ``python -m deploy.cli COMMAND`` (or ``lienthong COMMAND``).

- ``status``: each service's readiness, consumer lag and open dead letters;
- ``lag [--partitions] [--watch S]``: consumer lag per group, topic (and partition);
- ``dlq list|show ID|replay ID --reason R [--payload FILE]|discard ID --reason R``;
- ``dossier CODE``: the dossier's timeline across services, causes indented under effects;
- ``replay-read-models``: rebuild the console's read models from the log and compare;
- ``load --rate N --duration S``: realistic dossiers on an open-loop schedule, with live
  throughput and latency (submit → accepted, submit → receipt sent).

Where the services are: ``LIENTHONG_<SERVICE>_URL``, else the ports ``make run`` uses (and
its broker and database, from ``.run/where.env``, unless the environment names them). Who
calls: ``--token`` or ``LIENTHONG_TOKEN``, else the operator token ``make run`` wrote to
``.run/operator-token``. ``load`` mints desk officers' tokens with ``LIENTHONG_JWT_SECRET``,
else with the development secret (which only services in development mode accept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from deploy import lag as lag_cli
from deploy.kafka import dev_env
from deploy.load import Dossiers, OpenLoop, Receipts, Tally, percentile
from deploy.local import DEFAULT_PORTS, SERVICES
from services.runtime import auth
from services.runtime.calendar import VN_TZ
from services.runtime.kafka_auth import KafkaSecurity, read_env_file
from services.runtime.settings import DEV_JWT_SECRET, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
console = Console(soft_wrap=True)


def url_of(service: str) -> str:
    env = os.environ.get(f"LIENTHONG_{service.upper()}_URL")
    if env:
        return env.rstrip("/")
    port = DEFAULT_PORTS.get(service)
    if port is None:
        raise SystemExit(f"no address for {service}: set LIENTHONG_{service.upper()}_URL")
    return f"http://127.0.0.1:{port}"


def operator_token(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("LIENTHONG_TOKEN"):
        return os.environ["LIENTHONG_TOKEN"]
    path = RUN / "operator-token"
    return path.read_text().strip() if path.exists() else None


def desk_token(agency: str, officer: int = 0) -> str:
    """Desk officer number ``officer`` of ``agency`` (for ``load``)."""
    settings = ServiceSettings.for_service("intake")
    secret = os.environ.get("LIENTHONG_JWT_SECRET") or DEV_JWT_SECRET
    return auth.mint(
        secret,
        agency_id=agency,
        role=auth.OFFICER,
        person=f"load-{officer}@{agency}",
        now=datetime.now(UTC),
        ttl=auth.dev_token_lifetime(settings),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        department="TNTKQ",
        name="Cán bộ một cửa (thử tải)",
    )


def local(ts: str | None) -> str:
    """An ISO timestamp shown in Asia/Ho_Chi_Minh."""
    if not ts:
        return "-"
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(ts).astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S")
    return ts


class Api:
    """The services' HTTP APIs with the caller's token; an error answer ends the command
    with the service's reason."""

    def __init__(self, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=30, headers=headers)

    def call(self, method: str, service: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, f"{url_of(service)}{path}", **kw)
        except httpx.HTTPError as exc:
            raise SystemExit(f"{service} unreachable at {url_of(service)}: {exc!r}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail", body)
                fields = "; ".join(f"{e['field']}: {e['reason']}" for e in body.get("errors", []))
            except (ValueError, AttributeError, KeyError, TypeError):
                detail, fields = r.text[:500], ""
            raise SystemExit(f"{service} answered {r.status_code}: {detail} {fields}".strip())
        return r.json() if r.content else None


# --- status ------------------------------------------------------------------------------


def status(api: Api) -> int:
    table = Table(title="Liên thông — services")
    for col in ("service", "ready", "database", "broker", "consuming", "lag"):
        table.add_column(col, justify="right" if col == "lag" else "left")
    worst = 0
    for name in SERVICES:
        try:
            r = api.http.get(f"{url_of(name)}/ready", timeout=5)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            table.add_row(name, "[red]unreachable[/]", "", "", "", "", end_section=False)
            worst = max(worst, 2)
            console.log(f"{name}: {exc!r}")
            continue
        checks = body.get("checks", {})
        lag = body.get("lag", {}).get("total", "-")

        def mark(ok: Any) -> str:
            return "-" if ok is None else "[green]yes[/]" if ok else "[red]no[/]"

        ready = body.get("status") == "ready"
        worst = max(worst, 0 if ready else 1)
        table.add_row(
            name,
            mark(ready),
            mark(checks.get("database")),
            mark(checks.get("broker")),
            mark(checks.get("consuming")),
            str(lag),
        )
    console.print(table)
    with contextlib.suppress(SystemExit):
        s = api.call("GET", "console", "/v1/console/status")
        console.print(
            f"events seen by the console: {s['events_total']:,}"
            f" (last 5 minutes {s['events_last_5_minutes']:,})   dossiers {s['dossiers']:,}"
            f"   open dead letters: {s['open_dead_letters']}"
        )
    return worst


# --- dead letters ------------------------------------------------------------------------


def dlq(api: Api, a: argparse.Namespace) -> int:
    base = "/v1/console/dead-letters"
    if a.action == "list":
        params: dict[str, Any] = {"limit": a.limit}
        if a.status != "all":
            params["status"] = a.status
        items = api.call("GET", "console", base, params=params)
        table = Table(title=f"dead letters ({a.status})")
        for col in ("id", "when", "writer", "from", "type", "dossier", "status", "reason"):
            table.add_column(col, overflow="fold")
        for d in items:
            table.add_row(
                d["id"],
                local(d.get("dead_lettered_at")),
                str(d.get("writer") or "-")
                + (f"\n  FORGED: {d['forged']}" if d.get("forged") else ""),
                f"{d.get('origin_topic')}[{d.get('origin_partition')}]@{d.get('origin_offset')}",
                str(d.get("event_type") or "-"),
                str(d.get("dossier_code") or "-"),
                d["status"],
                d["reason"][:160]
                + "".join(f"\n  {e['field']}: {e['reason']}" for e in d.get("errors", [])[:5]),
            )
        console.print(table)
        return 0
    if a.action == "show":
        params = {"reveal": "true"} if a.reveal else {}
        console.print_json(data=api.call("GET", "console", f"{base}/{a.id}", params=params))
        return 0
    body: dict[str, Any] = {"reason": a.reason}
    if a.action == "replay" and a.payload:
        body["payload"] = json.loads(Path(a.payload).read_text("utf-8"))
    result = api.call("POST", "console", f"{base}/{a.id}/{a.action}", json=body)
    console.print_json(data=result)
    return 0


# --- one dossier -------------------------------------------------------------------------


def dossier(api: Api, code: str) -> int:
    view = api.call("GET", "console", f"/v1/console/dossiers/{code}")
    events: list[dict[str, Any]] = view["events"]
    console.rule(f"dossier {code}")
    for k, v in (view.get("dossier") or {}).items():
        if v is not None and not isinstance(v, (dict, list)):
            console.print(f"  {k}: {local(v) if k.endswith('_at') else v}")
    by_id = {e["event_id"]: e for e in events}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in events:
        parent = e.get("causation_id") if e.get("causation_id") in by_id else None
        children.setdefault(parent, []).append(e)
    tree = Tree(
        f"[bold]{len(events)} events[/], {len(view['correlations'])} correlation(s)"
        " — each effect under its cause"
    )

    def add(node: Tree, e: dict[str, Any]) -> None:
        branch = node.add(
            f"{local(e['occurred_at'])}  [bold]{e['type']}[/]"
            f"  [dim]{e['producer']} · {e['topic']}[{e['partition']}]@{e['offset']}"
            f" · {str(e['event_id'])[:8]}[/]"
        )
        for c in children.get(e["event_id"], []):
            add(branch, c)

    for root in children.get(None, []):
        add(tree, root)
    console.print(tree)
    requests = view.get("opinion_requests", [])
    if requests:
        table = Table(title="opinion requests")
        for col in ("agency", "status", "due", "reminders", "escalations"):
            table.add_column(col)
        for r in requests:
            table.add_row(
                str(r.get("agency_name") or r.get("agency_id")),
                r["status"],
                local(r.get("due_at")),
                str(r["reminders"]),
                str(r["escalations"]),
            )
        console.print(table)
    return 0


# --- read models -------------------------------------------------------------------------


def replay_read_models(compare: bool, schema: str | None) -> int:
    """Rebuild the console's read models from the log into a fresh schema (in this process,
    with the console's own settings: ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``, else
    what ``make run`` started) and, with ``compare``, compare them with the live ones."""
    from services.console import rebuild  # the console's own code, for this command only

    env = dev_env()
    for k, v in env.items():
        os.environ.setdefault(k, v)
    settings = ServiceSettings.for_service("console")
    security = KafkaSecurity.from_env(None, env)
    with console.status("replaying every topic from offset 0 into a fresh schema…"):
        report = asyncio.run(
            rebuild.rebuild(settings, schema=schema, with_compare=compare, security=security)
        )
    for line in report.lines():
        console.print(line, style="" if report.equal or not compare else "red")
    return 0 if (not compare or report.equal) else 1


# --- load --------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def _load_table(t: Tally, elapsed: float, last: tuple[float, int, int]) -> Table:
    then, accepted_then, receipts_then = last
    span = max(elapsed - then, 1e-9)
    table = Table(title=f"load — {elapsed:,.0f} s", expand=False)
    for col in ("", "total", "per second (last)", "p50", "p99"):
        table.add_column(col, justify="right")
    table.add_row(
        "accepted",
        f"{t.accepted:,}",
        f"{(t.accepted - accepted_then) / span:,.0f}",
        _ms(percentile(t.accept_ms, 0.5)),
        _ms(percentile(t.accept_ms, 0.99)),
    )
    table.add_row(
        "receipt sent",
        f"{len(t.receipt_ms):,}",
        f"{(len(t.receipt_ms) - receipts_then) / span:,.0f}",
        _ms(percentile(t.receipt_ms, 0.5)),
        _ms(percentile(t.receipt_ms, 0.99)),
    )
    refused = ", ".join(f"{k}: {v}" for k, v in sorted(t.refused.items())) or "0"
    table.caption = (
        f"sent {t.sent:,}  in flight {t.in_flight:,}  refused {refused}  errors {t.errors}"
        f"  sent late {t.behind:,}"
    )
    return table


async def load_async(rate: float, duration: float, settle: float) -> int:
    env = dev_env()
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    prefix = env.get("LIENTHONG_TOPIC_PREFIX", "")
    for k, v in env.items():  # the SASL credentials of `make run`, for the receipts reader
        os.environ.setdefault(k, v)
    dossiers = Dossiers.sample()
    loop = OpenLoop(url_of("intake"), dossiers, desk_token, rate=rate, duration=duration)
    receipts = Receipts(bootstrap, prefix, loop.tally)
    await receipts.start()
    console.print(
        f"[bold]load[/]: {rate:g} dossiers/s for {duration:g} s over"
        f" {len(dossiers.procedures)} procedures and {len(dossiers.desks)} desks"
        f" → {url_of('intake')}"
    )
    started = time.monotonic()
    sender = asyncio.create_task(loop.run())
    progress = Progress(
        TextColumn("sending"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
    )
    job = progress.add_task("send", total=int(rate * duration))
    last = (0.0, 0, 0)
    t = loop.tally

    with Live(console=console, auto_refresh=False) as live:
        settle_until: float | None = None
        while True:
            await asyncio.sleep(1)
            elapsed = time.monotonic() - started
            progress.update(job, completed=t.scheduled)
            live.update(Group(progress, _load_table(t, elapsed, last)), refresh=True)
            last = (elapsed, t.accepted, len(t.receipt_ms))
            if sender.done() and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and (
                len(t.receipt_ms) >= t.accepted or time.monotonic() > settle_until
            ):
                break
    await sender
    await receipts.stop()
    took = time.monotonic() - started
    console.print()
    console.print(
        f"accepted {t.accepted:,} of {t.sent:,} in {duration:g} s"
        f" ({t.accepted / duration:,.1f}/s offered {rate:g}/s); receipts sent for"
        f" {len(t.receipt_ms):,} ({len(t.receipt_ms) / took:,.1f}/s over {took:,.0f} s)"
    )
    console.print(
        f"submit → accepted p50 {_ms(percentile(t.accept_ms, 0.5))}"
        f" p99 {_ms(percentile(t.accept_ms, 0.99))};"
        f" submit → receipt sent p50 {_ms(percentile(t.receipt_ms, 0.5))}"
        f" p99 {_ms(percentile(t.receipt_ms, 0.99))}"
    )
    if t.first_error:
        console.print(f"[yellow]first error:[/] {t.first_error}")
    return 0 if t.errors == 0 and not t.refused else 1


# --- entry -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lienthong", description=__doc__.split("\n")[0])
    p.add_argument("--token", help="bearer token (else LIENTHONG_TOKEN or .run/operator-token)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="readiness, lag and dead letters of every service")
    lg = sub.add_parser("lag", help="consumer lag per group and topic")
    lg.add_argument("--partitions", action="store_true")
    lg.add_argument("--watch", type=float, metavar="SECONDS")
    d = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    dsub = d.add_subparsers(dest="action", required=True)
    ls = dsub.add_parser("list")
    ls.add_argument(
        "--status",
        default="open",
        choices=("open", "replay_pending", "replayed", "replay_failed", "discarded", "all"),
    )
    ls.add_argument("--limit", type=int, default=50)
    sh = dsub.add_parser("show")
    sh.add_argument(
        "id",
        help="<writer>-<partition>-<offset> on the writer's dead-letter topic",
    )
    sh.add_argument("--reveal", action="store_true", help="the whole payload (audited)")
    for name in ("replay", "discard"):
        r = dsub.add_parser(name)
        r.add_argument("id")
        r.add_argument("--reason", required=True, help="why (kept in the audit)")
        if name == "replay":
            r.add_argument("--payload", help="a JSON file: the fixed event to publish instead")
    ds = sub.add_parser("dossier", help="a dossier's timeline across services")
    ds.add_argument("code")
    rr = sub.add_parser("replay-read-models", help="rebuild the console's read models")
    rr.add_argument("--no-compare", action="store_true")
    rr.add_argument("--schema", help="the schema to rebuild into (console_rebuild)")
    ld = sub.add_parser("load", help="submit realistic dossiers at a rate")
    ld.add_argument("--rate", type=float, default=100.0, help="dossiers per second")
    ld.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    ld.add_argument("--settle", type=float, default=30.0, help="seconds to wait for receipts")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if not (os.environ.get("DATABASE_URL") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        for k, v in read_env_file(RUN / "where.env").items():  # what `make run` started
            os.environ.setdefault(k, v)
    if a.cmd == "lag":
        env = dev_env()
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                lag_cli.main_async(
                    bootstrap, env.get("LIENTHONG_TOPIC_PREFIX", ""), a.watch, a.partitions
                )
            )
        return 0
    if a.cmd == "load":
        if a.rate <= 0 or a.duration <= 0:
            raise SystemExit("--rate and --duration must be positive")
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(load_async(a.rate, a.duration, a.settle))
        return 130
    if a.cmd == "replay-read-models":
        return replay_read_models(not a.no_compare, a.schema)
    api = Api(operator_token(a.token))
    if a.cmd == "status":
        return status(api)
    if a.cmd == "dlq":
        return dlq(api, a)
    if a.cmd == "dossier":
        return dossier(api, a.code)
    raise SystemExit(f"unknown command {a.cmd}")


if __name__ == "__main__":
    sys.exit(main())
