"""A simulator of the National Public Service Portal's (DVCQG) service API, as a real HTTP
service: ``python -m deploy.simulators.portal --port P --admin-port A``.

It serves what services/runtime/portal_client.py calls (no official specification exists;
the paths, the session's lifetime and every error code besides 0 are this simulator's, as
that module says):

- ``POST /api/auth`` ``{"username", "password"}`` → ``{"error_code": 0, "message",
  "session"}``, or ``{"error_code": -1, "message"}``. Accounts: ``--users user:pass,...``
  or ``PORTAL_SIM_USERS``. A session lasts ``--session-ttl`` seconds of the shared clock.
- ``POST /api/service`` ``{"session", "madonvi", "service", ...}`` with the services
  ``DongBoHoSoMC``, ``CapNhatTienDoHoSoMC``, ``TraCuuHoSo`` and ``GuiThongBaoNguoiDan``.

Answers (HTTP 200 unless a fault says otherwise):

====  ======================================================================
0     success
-1    refused: an invalid envelope or record (all-or-nothing), a wrong login;
      ``"message": "MaHoSo <code>: <field>: <reason>"`` for a record
-2    the session is unknown or expired: log in again
3     ``isUpdating: "False"`` for a dossier the portal holds
      (``"MaHoSo <code>: hồ sơ đã tồn tại"``; open-source clients then send it
      again as an update)
-4    an update or progress step for a dossier the portal does not hold
      (``"MaHoSo <code>: hồ sơ chưa tồn tại"``)
====  ======================================================================

Besides ``error_code`` and ``message``, a refusal carries keys of the simulator's own (the
real portal's are UNKNOWN): ``"field"`` (the path of the refused field, e.g.
``TaiLieuNop[0].IsDeleted``, or the envelope key) for -1, and ``"MaHoSo"`` (the record
refused) for -1, 3 and -4. A fault's ``error`` answers HTTP ``status`` with
``{"error_code": status, "message"}``.

The admin port (JSON) shows what arrived and sets faults: ``GET /records``,
``/records/{code}``, ``/progress/{code}``, ``/messages``, ``/log?code=``, ``/stats``,
``/health``, ``GET|POST /faults``, ``POST /reset``. Every accepted call that changes what
the portal holds is appended to ``--data FILE`` and replayed on start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
from collections import Counter, deque
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import model_validator

from deploy.simulators.common import (
    Faults,
    FaultSpec,
    Journal,
    Runner,
    base_arguments,
    iso,
    loads_strict,
    serve,
    shared_clock,
)
from deploy.simulators.portal_records import MAHOSO_RE, MESSAGE, RECORD, STEP, Invalid, Obj
from services.runtime.clock import Clock
from services.runtime.portal_client import AUTH_PATH, SERVICE_PATH

SUCCESS = 0
REFUSED = -1
SESSION_INVALID = -2
EXISTS = 3
NOT_HELD = -4

SYNC = "DongBoHoSoMC"
PROGRESS = "CapNhatTienDoHoSoMC"
LOOKUP = "TraCuuHoSo"
# The real service that posts a message to an applicant's portal account is UNKNOWN: no
# open-source client shows one. This name and its fields are the simulator's (and our
# notification service's) assumption, to be replaced by the portal's when it is known.
MESSAGE_SERVICE = "GuiThongBaoNguoiDan"
MUTATING = (SYNC, PROGRESS, MESSAGE_SERVICE)

MAX_BODY = 8 * 1024 * 1024
MAX_ITEMS = 500
USERS_ENV = "PORTAL_SIM_USERS"
DEFAULT_USERS = "lienthong:lienthong-dev"


class PortalFault(FaultSpec):
    """``error``: answer HTTP ``status`` with ``{"error_code": status, "message"}``, store
    nothing. ``timeout``: handle the call (store it) and answer after ``delay_s``. ``down``:
    the service port stops listening until the shared clock passes the end. ``reject``:
    refuse, with -1, a call whose records (or steps, messages) hold ``field`` with a value.
    """

    mode: Literal["ok", "error", "timeout", "down", "reject"] = "ok"
    field: str | None = None

    @model_validator(mode="after")
    def _field_for_reject(self) -> PortalFault:
        if self.mode == "reject" and not self.field:
            raise ValueError("mode `reject` needs the `field` whose presence is refused")
        return self


class Refusal(Exception):
    def __init__(
        self, code: int, message: str, *, field: str | None = None, mahoso: str | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.mahoso = code, message, field, mahoso

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if self.mahoso is not None:
            body["MaHoSo"] = self.mahoso
        if self.field is not None:
            body["field"] = self.field
        return body


def content_hash(item: dict[str, Any]) -> str:
    canonical = json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_users(text: str) -> dict[str, str]:
    """``user:pass,user2:pass2`` (a password may hold ``:``, not ``,``)."""
    users: dict[str, str] = {}
    for entry in text.split(","):
        if entry.strip():
            name, sep, password = entry.strip().partition(":")
            if not sep or not name or not password:
                raise ValueError(f"an account is user:password, not {entry!r}")
            users[name] = password
    return users


def _service_of(body: Any) -> str:
    service = body.get("service") if isinstance(body, dict) else None
    return service if isinstance(service, str) else "?"


def _code_of(item: Any) -> str:
    value = item.get("MaHoSo") if isinstance(item, dict) else None
    return value if isinstance(value, str) else ""


class Portal:
    """What the portal holds and what it was told, in memory (and in the journal)."""

    def __init__(
        self,
        clock: Clock,
        users: dict[str, str],
        *,
        session_ttl_s: float = 600.0,
        journal: Journal | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.users = users
        self.session_ttl = timedelta(seconds=session_ttl_s)
        self.journal = journal or Journal(None)
        self.faults: Faults[PortalFault] = Faults(clock, PortalFault(), seed)
        self.runner: Runner | None = None
        self.clear()

    def clear(self) -> None:
        self.sessions: dict[str, tuple[str, datetime]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.record_hashes: dict[str, set[str]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.progress_hashes: dict[str, set[str]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=100_000)
        self.seq = 0
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def reset(self) -> None:
        self.clear()
        self.faults.reset()
        self.journal.clear()

    def replay(self) -> int:
        """Re-apply the journal's accepted calls; returns how many."""
        n = 0
        for entry in self.journal.entries():
            service, body = entry.get("service"), entry.get("body")
            if service in MUTATING and isinstance(body, dict):
                at = datetime.fromisoformat(str(entry["at"]))
                self.counts["calls"] += 1
                items = self._apply(str(service), body, at)
                self._log(
                    service=str(service),
                    code=SUCCESS,
                    message="replayed",
                    items=items,
                    body=body,
                    at=at,
                    replayed=True,
                )
                n += 1
        return n

    # -- the log -------------------------------------------------------------------------

    def _log(
        self,
        *,
        service: str,
        code: int,
        message: str,
        items: list[dict[str, Any]],
        body: dict[str, Any] | None = None,
        field: str | None = None,
        fault: str | None = None,
        at: datetime | None = None,
        replayed: bool = False,
    ) -> None:
        self.seq += 1
        entry: dict[str, Any] = {
            "seq": self.seq,
            "at": iso(at or self.clock.now()),
            "service": service,
            "outcome": "accepted" if code == SUCCESS else "refused",
            "error_code": code,
            "message": message,
            "items": items,
        }
        if body is not None:
            if "madonvi" in body:
                entry["madonvi"] = body["madonvi"]
            if "isUpdating" in body:
                entry["isUpdating"] = body["isUpdating"]
        if field is not None:
            entry["field"] = field
        if fault is not None:
            entry["fault"] = fault
        if replayed:
            entry["replayed"] = True
        self.log.append(entry)
        if service == "auth":  # logins are counted apart
            return
        if code == SUCCESS:
            self.counts["accepted"] += 1
        else:
            self.refused[str(code)] += 1

    @staticmethod
    def _items_of(body: dict[str, Any]) -> list[dict[str, Any]]:
        """Each MaHoSo (and status) a call carried, for the log of a refused call."""
        if body.get("service") == LOOKUP:
            return [{"MaHoSo": body.get("mahoso")}]
        data = body.get("data")
        if not isinstance(data, list):
            return []
        items = []
        for item in data[:MAX_ITEMS]:
            if isinstance(item, dict):
                entry = {"MaHoSo": item.get("MaHoSo")}
                for key in ("TrangThaiHoSo", "TrangThai", "MaThongBao"):
                    if key in item:
                        entry[key] = item[key]
                items.append(entry)
        return items

    # -- the service port ----------------------------------------------------------------

    def login(self, body: Any) -> dict[str, Any]:
        now = self.clock.now()
        self.sessions = {t: s for t, s in self.sessions.items() if s[1] > now}
        username = body.get("username") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if (
            not isinstance(username, str)
            or not isinstance(password, str)
            or not hmac.compare_digest(
                self.users.get(username, secrets.token_hex(16)).encode("utf-8", "replace"),
                password.encode("utf-8", "replace"),
            )
        ):
            self.counts["logins_refused"] += 1
            message = "Tên đăng nhập hoặc mật khẩu không đúng"
            self._log(service="auth", code=REFUSED, message=message, items=[])
            return {"error_code": REFUSED, "message": message}
        token = secrets.token_urlsafe(32)
        self.sessions[token] = (username, now + self.session_ttl)
        self.counts["logins"] += 1
        self._log(service="auth", code=SUCCESS, message=f"login {username}", items=[])
        return {"error_code": SUCCESS, "message": "Đăng nhập thành công", "session": token}

    def call(self, body: Any, unreadable: Refusal | None = None) -> dict[str, Any]:
        """One ``POST /api/service``: the answer, after logging it."""
        self.counts["calls"] += 1
        name = _service_of(body)
        try:
            if unreadable is not None:
                raise unreadable
            if not isinstance(body, dict):
                raise Refusal(REFUSED, "body: phải là đối tượng JSON", field="body")
            self._check_session(body)
            answer, items = self._serve(name, body)
        except Refusal as r:
            items = self._items_of(body) if isinstance(body, dict) else []
            self._log(
                service=name,
                code=r.code,
                message=r.message,
                items=items,
                body=body if isinstance(body, dict) else None,
                field=r.field,
            )
            return r.answer()
        self._log(service=name, code=SUCCESS, message=answer["message"], items=items, body=body)
        return answer

    def _check_session(self, body: dict[str, Any]) -> None:
        token = body.get("session")
        held = self.sessions.get(token) if isinstance(token, str) else None
        if held is None or held[1] <= self.clock.now():
            if isinstance(token, str):
                self.sessions.pop(token, None)
            raise Refusal(SESSION_INVALID, "Phiên làm việc không hợp lệ hoặc đã hết hạn")

    def _envelope(self, body: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in body:
            if key not in ("session", "madonvi", "service", *allowed):
                raise Refusal(REFUSED, f"{key}: trường không được hỗ trợ", field=key)
        unit = body.get("madonvi")
        if not isinstance(unit, str) or not unit.strip() or len(unit) > 50:
            raise Refusal(REFUSED, "madonvi: bắt buộc, mã đơn vị tối đa 50 ký tự", field="madonvi")

    def _serve(self, service: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        if service == SYNC:
            self._envelope(body, ("isUpdating", "data"))
            updating = body.get("isUpdating")
            if updating not in ("True", "False"):
                raise Refusal(
                    REFUSED, 'isUpdating: phải là chuỗi "True" hoặc "False"', field="isUpdating"
                )
            records = self._batch(body, RECORD)
            seen: set[str] = set()
            for record in records:
                code = record["MaHoSo"]
                if code in seen:
                    raise Refusal(
                        REFUSED,
                        f"MaHoSo {code}: MaHoSo: xuất hiện nhiều lần trong một lần gọi",
                        field="MaHoSo",
                        mahoso=code,
                    )
                seen.add(code)
                if updating == "False" and code in self.records:
                    raise Refusal(EXISTS, f"MaHoSo {code}: hồ sơ đã tồn tại", mahoso=code)
                if updating == "True" and code not in self.records:
                    raise Refusal(NOT_HELD, f"MaHoSo {code}: hồ sơ chưa tồn tại", mahoso=code)
            message = "Đồng bộ thành công"
        elif service == PROGRESS:
            self._envelope(body, ("data",))
            for step in self._batch(body, STEP):
                code = step["MaHoSo"]
                if code not in self.records:
                    raise Refusal(NOT_HELD, f"MaHoSo {code}: hồ sơ chưa tồn tại", mahoso=code)
            message = "Cập nhật tiến độ thành công"
        elif service == MESSAGE_SERVICE:
            self._envelope(body, ("data",))
            self._batch(body, MESSAGE)
            message = "Gửi thông báo thành công"
        elif service == LOOKUP:
            self._envelope(body, ("mahoso",))
            code = body.get("mahoso")
            if not isinstance(code, str) or not MAHOSO_RE.fullmatch(code):
                raise Refusal(REFUSED, "mahoso: mã hồ sơ không đúng định dạng", field="mahoso")
            held = self.records.get(code)
            item = {"MaHoSo": code, "found": held is not None}
            return {
                "error_code": SUCCESS,
                "message": "Tra cứu thành công",
                "result": [held] if held is not None else [],
            }, [item]
        else:
            raise Refusal(
                REFUSED, f"service: dịch vụ {service!r} không được hỗ trợ", field="service"
            )
        self._reject_fault(body)
        at = self.clock.now()
        items = self._apply(service, body, at)
        kept = {k: v for k, v in body.items() if k != "session"}
        self.journal.append({"at": iso(at), "service": service, "body": kept})
        return {"error_code": SUCCESS, "message": message}, items

    def _batch(self, body: dict[str, Any], rule: Obj) -> list[dict[str, Any]]:
        """``data``: all valid or the call is refused, naming the first bad field."""
        data = body.get("data")
        if not isinstance(data, list):
            raise Refusal(REFUSED, "data: phải là danh sách JSON (array)", field="data")
        if not data:
            raise Refusal(REFUSED, "data: không có bản ghi nào", field="data")
        if len(data) > MAX_ITEMS:
            raise Refusal(
                REFUSED, f"data: nhiều quá {MAX_ITEMS} bản ghi trong một lần gọi", field="data"
            )
        for i, item in enumerate(data):
            code = _code_of(item)
            try:
                rule.check(item, "")
            except Invalid as exc:
                path = exc.path if isinstance(item, dict) else f"data[{i}]"
                message = f"MaHoSo {code or '?'}: {path}: {exc.reason}"
                raise Refusal(REFUSED, message, field=path, mahoso=code) from None
        return data

    def _reject_fault(self, body: dict[str, Any]) -> None:
        spec = self.faults.hit("reject", count=False)
        if spec is None or spec.field is None:
            return
        for item in body["data"]:
            if item.get(spec.field) not in (None, "", []):
                self.faults.counted("reject")
                code = item["MaHoSo"]
                raise Refusal(
                    REFUSED,
                    f"MaHoSo {code}: {spec.field}: bị từ chối (lỗi giả lập)",
                    field=spec.field,
                    mahoso=code,
                )

    def _apply(self, service: str, body: dict[str, Any], at: datetime) -> list[dict[str, Any]]:
        """Take an accepted call in; the log's items, each saying if it was a duplicate."""
        items: list[dict[str, Any]] = []
        now = iso(at)
        for item in body["data"]:
            code = item["MaHoSo"]
            digest = content_hash(item)
            if service == SYNC:
                hashes = self.record_hashes.setdefault(code, set())
                duplicate = digest in hashes
                hashes.add(digest)
                self.records[code] = item
                self.counts["records_received"] += 1
                self.counts["duplicates"] += duplicate
                items.append(
                    {"MaHoSo": code, "TrangThaiHoSo": item["TrangThaiHoSo"], "duplicate": duplicate}
                )
            elif service == PROGRESS:
                hashes = self.progress_hashes.setdefault(code, set())
                duplicate = digest in hashes
                hashes.add(digest)
                self.progress.setdefault(code, []).append(item)
                self.counts["progress_steps"] += 1
                self.counts["progress_duplicates"] += duplicate
                items.append(
                    {"MaHoSo": code, "TrangThai": item["TrangThai"], "duplicate": duplicate}
                )
            else:
                ref = item["MaThongBao"]
                held = self.messages.get(ref)
                duplicate = held is not None
                if held is None:
                    self.messages[ref] = {"at": now, "copies": 1, "message": item}
                else:
                    held["copies"] += 1
                    self.counts["message_duplicates"] += 1
                items.append({"MaHoSo": code, "MaThongBao": ref, "duplicate": duplicate})
        return items

    def faulted(self, kind: str, body: Any, status: int) -> dict[str, Any]:
        """An ``error`` fault's answer (nothing stored), logged as a refusal."""
        message = f"Hệ thống đang bận, vui lòng thử lại sau (lỗi giả lập HTTP {status})"
        if kind == "auth":
            service, items = "auth", []
        else:
            self.counts["calls"] += 1
            service = _service_of(body)
            items = self._items_of(body) if isinstance(body, dict) else []
        body_ = body if isinstance(body, dict) else None
        self._log(
            service=service, code=status, message=message, items=items, body=body_, fault="error"
        )
        return {"error_code": status, "message": message}

    # -- the admin port ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {
            "calls": c["calls"],
            "accepted": c["accepted"],
            "refused": dict(self.refused),
            "records": len(self.records),
            "records_received": c["records_received"],
            "duplicates": c["duplicates"],
            "progress_steps": c["progress_steps"],
            "progress_duplicates": c["progress_duplicates"],
            "messages": len(self.messages),
            "message_duplicates": c["message_duplicates"],
            "logins": c["logins"],
            "logins_refused": c["logins_refused"],
            "sessions": len(self.sessions),
            "faults_injected": dict(self.faults.injected),
            "journal_lines_skipped": self.journal.skipped,
        }


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise Refusal(REFUSED, f"body: lớn quá {MAX_BODY} byte", field="body")
    try:
        return loads_strict(raw)
    except ValueError:
        raise Refusal(REFUSED, "body: không phải JSON hợp lệ", field="body") from None


def service_app(portal: Portal) -> FastAPI:
    app = FastAPI(title="DVCQG simulator: service port", docs_url=None, redoc_url=None)

    async def handle(request: Request, kind: str) -> JSONResponse:
        body: Any = None
        unreadable: Refusal | None = None
        try:
            body = await _json_body(request)
        except Refusal as r:
            unreadable = r
        error = portal.faults.hit("error")
        if error is not None:
            return JSONResponse(portal.faulted(kind, body, error.status), error.status)
        timeout = portal.faults.hit("timeout")
        if kind == "auth":
            answer = portal.login(body)
        else:
            answer = portal.call(body, unreadable)
        if timeout is not None:
            portal.log[-1]["fault"] = "timeout"
            await asyncio.sleep(timeout.delay_s)  # stored already: the client gives up first
        return JSONResponse(answer)

    @app.post(AUTH_PATH)
    async def auth(request: Request) -> JSONResponse:
        return await handle(request, "auth")

    @app.post(SERVICE_PATH)
    async def service(request: Request) -> JSONResponse:
        return await handle(request, "call")

    return app


def admin_app(portal: Portal) -> FastAPI:
    app = FastAPI(title="DVCQG simulator: admin port")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        runner = portal.runner
        return {
            "status": "ok",
            "simulator": "portal",
            "service_port_up": runner.service_up if runner else None,
            "now": iso(portal.clock.now()),
            "fault": portal.faults.describe(),
        }

    @app.get("/records")
    async def records() -> dict[str, Any]:
        return portal.records

    @app.get("/records/{code}")
    async def record(code: str) -> dict[str, Any]:
        if code not in portal.records:
            raise HTTPException(404, f"the portal holds no dossier {code}")
        return portal.records[code]

    @app.get("/progress/{code}")
    async def progress(code: str) -> list[dict[str, Any]]:
        return portal.progress.get(code, [])

    @app.get("/messages")
    async def messages() -> list[dict[str, Any]]:
        return list(portal.messages.values())

    @app.get("/log")
    async def log(
        code: str | None = None, service: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        entries = [
            e
            for e in portal.log
            if (code is None or any(i.get("MaHoSo") == code for i in e["items"]))
            and (service is None or e["service"] == service)
        ]
        return entries[-limit:] if limit > 0 else entries

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return portal.stats()

    @app.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return portal.faults.describe()

    @app.post("/faults")
    async def set_faults(spec: PortalFault) -> dict[str, Any]:
        portal.faults.set(spec)
        if portal.runner is not None:
            await portal.runner.reconcile()  # `down` is down when this answers
        return portal.faults.describe()

    @app.post("/reset")
    async def reset() -> dict[str, Any]:
        portal.reset()
        if portal.runner is not None:
            await portal.runner.reconcile()
        return {"reset": True}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments("A simulator of the national portal's (DVCQG) service API")
    parser.add_argument(
        "--users",
        default=os.environ.get(USERS_ENV) or DEFAULT_USERS,
        help=f"accounts user:pass,... (default: ${USERS_ENV}, else {DEFAULT_USERS})",
    )
    parser.add_argument("--session-ttl", type=float, default=600.0, help="seconds of the clock")
    args = parser.parse_args(argv)
    clock = shared_clock(args.clock_file)
    portal = Portal(
        clock,
        parse_users(args.users),
        session_ttl_s=args.session_ttl,
        journal=Journal(args.data),
        seed=args.seed,
    )
    replayed = portal.replay()
    runner = Runner(
        service_app(portal),
        admin_app(portal),
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        want_up=lambda: not portal.faults.down,
    )
    portal.runner = runner
    banner = (
        f"portal simulator: service http://{args.host}:{args.port}{SERVICE_PATH}, "
        f"admin http://{args.host}:{args.admin_port}/stats; {len(portal.users)} account(s), "
        f"{replayed} call(s) replayed from {args.data or 'no file'}"
    )
    return serve(runner, banner)


if __name__ == "__main__":
    raise SystemExit(main())
