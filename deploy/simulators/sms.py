"""A simulator of an HTTP SMS gateway, as a real HTTP service:
``python -m deploy.simulators.sms --port P --admin-port A``.

No particular provider is imitated; the API is the small one our notification service
speaks:

- ``POST /v1/messages`` with ``Authorization: Bearer <key>`` (``--api-key`` or
  ``SMS_SIM_API_KEY``) and ``{"to", "text", "client_ref", "callback_url"}`` →
  ``202 {"id", "status": "accepted"}``; the same ``client_ref`` again → ``200`` with the
  first ``id`` (counted as a duplicate, nothing sent again); a wrong or missing key →
  ``401``; a bad field → ``400 {"error", "field"}``.
- After ``--receipt-delay`` seconds (real time) it POSTs a delivery receipt to
  ``callback_url``: ``{"id", "client_ref", "to", "status": "delivered"|"failed", "reason",
  "at"}`` (``at`` of the shared clock) with ``X-Signature``: the hex HMAC-SHA256 of the
  exact body bytes under ``--webhook-secret`` / ``SMS_SIM_WEBHOOK_SECRET``. A callback that
  cannot be reached or answers 5xx, 408 or 429 is tried again with backoff for
  ``--receipt-retry-for`` seconds; any other 4xx is final (the receiver refused it).

The admin port: ``GET /messages``, ``/messages/{id}``, ``/stats``, ``/health``,
``GET|POST /faults``, ``POST /reset``. With ``--data FILE`` accepted messages and final
receipt outcomes are appended there and reloaded on start; a receipt not yet delivered is
sent again after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import unicodedata
from collections import Counter
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import Field

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
from services.runtime.clock import Clock

MESSAGES_PATH = "/v1/messages"
MOBILE = re.compile(r"0(3|5|7|8|9)[0-9]{8}")
CLIENT_REF = re.compile(r"[\x20-\x7e]{1,100}")
URL = re.compile(r"https?://[\x21-\x7e]{1,2000}")
FIELDS = ("to", "text", "client_ref", "callback_url")
MAX_TEXT = 1000
MAX_BODY = 64 * 1024
API_KEY_ENV = "SMS_SIM_API_KEY"
SECRET_ENV = "SMS_SIM_WEBHOOK_SECRET"
DEFAULT_API_KEY = "dev-sms-key"
DEFAULT_SECRET = "dev-sms-webhook-secret"
MALFORMED_KINDS = ("not_json", "missing_fields", "bad_signature")
FAILED_REASON = "subscriber unreachable"


class SmsFault(FaultSpec):
    """``error``, ``timeout`` and ``down`` as for the portal; ``malformed_receipts``: each
    receipt in turn a body that is not JSON, one that misses fields, one with a wrong
    signature; ``drop_receipts``: no receipt at all. Receipts to ``fail_numbers`` say
    ``failed`` whatever the mode."""

    mode: Literal["ok", "error", "timeout", "down", "malformed_receipts", "drop_receipts"] = "ok"
    fail_numbers: list[str] = Field(default_factory=list, max_length=1000)


class BadRequest(Exception):
    def __init__(self, field: str, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.field, self.error, self.status = field, error, status


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _text_problem(text: str) -> str | None:
    for i, ch in enumerate(text):
        if ch in "\n\r":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"a control character U+{ord(ch):04X} at position {i}"
    return None


def validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    for key in body:
        if key not in FIELDS:
            raise BadRequest(str(key), "unknown field")
    to = body.get("to")
    if not isinstance(to, str) or not MOBILE.fullmatch(to):
        raise BadRequest("to", "not a Vietnamese mobile number (0[35789] and 8 digits)")
    text = body.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
        raise BadRequest("text", f"a string of 1 to {MAX_TEXT} characters")
    problem = _text_problem(text)
    if problem:
        raise BadRequest("text", f"must not contain {problem}")
    ref = body.get("client_ref")
    if not isinstance(ref, str) or not CLIENT_REF.fullmatch(ref):
        raise BadRequest("client_ref", "1 to 100 printable ASCII characters")
    callback = body.get("callback_url")
    if callback is not None and (not isinstance(callback, str) or not URL.fullmatch(callback)):
        raise BadRequest("callback_url", "an http(s) URL of printable ASCII, no spaces")
    return {"to": to, "text": text, "client_ref": ref, "callback_url": callback}


class Gateway:
    def __init__(
        self,
        clock: Clock,
        *,
        api_key: str,
        webhook_secret: str,
        receipt_delay_s: float = 0.2,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
        retry_for_s: float = 600.0,
        journal: Journal | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.receipt_delay_s = receipt_delay_s
        self.retry_base_s, self.retry_max_s, self.retry_for_s = (
            retry_base_s,
            retry_max_s,
            retry_for_s,
        )
        self.journal = journal or Journal(None)
        self.faults: Faults[SmsFault] = Faults(clock, SmsFault(), seed)
        self.runner: Runner | None = None
        self.http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.clear()

    def clear(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.by_ref: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.malformed_turn = 0
        for task in self._tasks:
            task.cancel()
        self._tasks = set()

    def reset(self) -> None:
        self.clear()
        self.faults.reset()
        self.journal.clear()

    def replay(self) -> list[str]:
        """Messages and receipt outcomes from the journal; the ids still owed a receipt."""
        for entry in self.journal.entries():
            if entry.get("event") == "message" and isinstance(entry.get("message"), dict):
                msg = {**entry["message"], "duplicates": 0, "receipts": []}
                self.messages[msg["id"]] = msg
                self.by_ref[msg["client_ref"]] = msg["id"]
                self.counts["accepted"] += 1
            elif entry.get("event") == "receipt" and entry.get("id") in self.messages:
                msg = self.messages[entry["id"]]
                msg["receipts"].append(entry.get("receipt", {}))
                msg["receipt_done"] = True
        return [
            m["id"]
            for m in self.messages.values()
            if not m.get("receipt_done") and m.get("callback_url")
        ]

    # -- the service port ----------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            key.strip().encode("utf-8", "replace"), self.api_key.encode()
        )

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        fields = validate(body)
        first = self.by_ref.get(fields["client_ref"])
        if first is not None:
            self.messages[first]["duplicates"] += 1
            self.counts["duplicates"] += 1
            return 200, {"id": first, "status": "accepted", "duplicate": True}
        msg = {
            "id": "msg_" + secrets.token_hex(10),
            **fields,
            "accepted_at": iso(self.clock.now()),
        }
        self.journal.append({"event": "message", "message": msg})
        self.messages[msg["id"]] = {**msg, "duplicates": 0, "receipts": []}
        self.by_ref[msg["client_ref"]] = msg["id"]
        self.counts["accepted"] += 1
        if msg["callback_url"]:
            self.schedule(msg["id"])
        return 202, {"id": msg["id"], "status": "accepted"}

    # -- receipts ------------------------------------------------------------------------

    def schedule(self, message_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(message_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receipt(self, msg: dict[str, Any], kind: str, failed: bool) -> tuple[bytes, str]:
        body = {
            "id": msg["id"],
            "client_ref": msg["client_ref"],
            "to": msg["to"],
            "status": "failed" if failed else "delivered",
            "reason": FAILED_REASON if failed else None,
            "at": iso(self.clock.now()),
        }
        if kind == "missing_fields":
            del body["status"], body["at"]
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if kind == "not_json":
            raw = raw[: len(raw) // 2]  # cut off mid-object
        signature = sign(self.webhook_secret, raw)
        if kind == "bad_signature":
            signature = sign(self.webhook_secret + "-wrong", raw)
        return raw, signature

    async def _deliver(self, message_id: str) -> None:
        await asyncio.sleep(self.receipt_delay_s)
        msg = self.messages.get(message_id)
        if msg is None:
            return
        failed = msg["to"] in self.faults.active().fail_numbers
        receipt: dict[str, Any] = {"kind": "ok", "status": "failed" if failed else "delivered"}
        if self.faults.hit("drop_receipts") is not None:
            self.counts["receipts_dropped"] += 1
            self._final(msg, {**receipt, "kind": "dropped", "outcome": "dropped", "attempts": 0})
            return
        if self.faults.hit("malformed_receipts") is not None:
            receipt["kind"] = MALFORMED_KINDS[self.malformed_turn % len(MALFORMED_KINDS)]
            self.malformed_turn += 1
            self.counts["receipts_malformed"] += 1
        assert self.http is not None
        # one body for every attempt: the moment of delivery does not move with retries
        raw, signature = self._receipt(msg, receipt["kind"], failed)
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            outcome, detail = "retry", ""
            try:
                r = await self.http.post(
                    msg["callback_url"],
                    content=raw,
                    headers={"content-type": "application/json", "X-Signature": signature},
                )
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
            else:
                detail = f"HTTP {r.status_code}"
                if r.is_success:
                    outcome = "sent"
                elif r.status_code < 500 and r.status_code not in (408, 429):
                    outcome = "refused"
            if outcome != "retry":
                self.counts["receipts_sent" if outcome == "sent" else "receipts_refused"] += 1
                self._final(
                    msg, {**receipt, "outcome": outcome, "attempts": attempt, "answer": detail}
                )
                return
            self.counts["receipt_attempts_failed"] += 1
            wait = min(self.retry_max_s, self.retry_base_s * 2 ** (attempt - 1))
            if time.monotonic() - started + wait > self.retry_for_s:
                self.counts["receipts_given_up"] += 1
                self._final(
                    msg, {**receipt, "outcome": "given_up", "attempts": attempt, "answer": detail}
                )
                return
            await asyncio.sleep(wait)

    def _final(self, msg: dict[str, Any], receipt: dict[str, Any]) -> None:
        receipt["at"] = iso(self.clock.now())
        msg["receipts"].append(receipt)
        msg["receipt_done"] = True
        self.journal.append({"event": "receipt", "id": msg["id"], "receipt": receipt})

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {
            "accepted": c["accepted"],
            "duplicates": c["duplicates"],
            "refused": dict(self.refused),
            "messages": len(self.messages),
            "receipts_sent": c["receipts_sent"],
            "receipts_refused": c["receipts_refused"],
            "receipts_given_up": c["receipts_given_up"],
            "receipts_failed": c["receipts_refused"] + c["receipts_given_up"],
            "receipt_attempts_failed": c["receipt_attempts_failed"],
            "receipts_dropped": c["receipts_dropped"],
            "receipts_malformed": c["receipts_malformed"],
            "receipts_pending": sum(
                1 for m in self.messages.values() if m["callback_url"] and not m.get("receipt_done")
            ),
            "faults_injected": dict(self.faults.injected),
        }


def _error(status: int, field: str | None, error: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "field": field}, status, headers=headers)


def service_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="SMS gateway simulator: service port", docs_url=None, redoc_url=None)

    @app.post(MESSAGES_PATH)
    async def send(request: Request) -> JSONResponse:
        error = gw.faults.hit("error")
        if error is not None:
            gw.refused[str(error.status)] += 1
            return _error(error.status, None, f"service unavailable (simulated {error.status})")
        if not gw.authorized(request.headers.get("authorization")):
            gw.refused["401"] += 1
            return _error(401, "authorization", "missing or wrong API key (Bearer)")
        timeout = gw.faults.hit("timeout")
        raw = await request.body()
        try:
            if len(raw) > MAX_BODY:
                raise BadRequest("body", f"larger than {MAX_BODY} bytes")
            try:
                body = loads_strict(raw)
            except ValueError:
                raise BadRequest("body", "not valid JSON") from None
            status, answer = gw.submit(body)
        except BadRequest as exc:
            gw.refused[str(exc.status)] += 1
            return _error(exc.status, exc.field, f"{exc.field}: {exc.error}")
        if timeout is not None:
            await asyncio.sleep(timeout.delay_s)  # accepted already: the client gives up first
        return JSONResponse(answer, status)

    return app


def admin_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="SMS gateway simulator: admin port")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "simulator": "sms",
            "service_port_up": gw.runner.service_up if gw.runner else None,
            "now": iso(gw.clock.now()),
            "fault": gw.faults.describe(),
        }

    @app.get("/messages")
    async def messages(to: str | None = None) -> list[dict[str, Any]]:
        return [m for m in gw.messages.values() if to is None or m["to"] == to]

    @app.get("/messages/{message_id}")
    async def message(message_id: str) -> dict[str, Any]:
        if message_id not in gw.messages:
            raise HTTPException(404, f"no message {message_id}")
        return gw.messages[message_id]

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return gw.stats()

    @app.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return gw.faults.describe()

    @app.post("/faults")
    async def set_faults(spec: SmsFault) -> dict[str, Any]:
        gw.faults.set(spec)
        if gw.runner is not None:
            await gw.runner.reconcile()
        return gw.faults.describe()

    @app.post("/reset")
    async def reset() -> dict[str, Any]:
        gw.reset()
        if gw.runner is not None:
            await gw.runner.reconcile()
        return {"reset": True}

    return app


class _GatewayRunner(Runner):
    """Opens the receipts' HTTP client in the loop and re-sends receipts owed after a
    restart."""

    def __init__(self, gw: Gateway, owed: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gw, self.owed = gw, owed

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            self.gw.http = http
            for message_id in self.owed:
                self.gw.schedule(message_id)
            try:
                await super().run()
            finally:
                for task in list(self.gw._tasks):
                    task.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments("A simulator of an HTTP SMS gateway with signed receipts")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY)
    parser.add_argument("--webhook-secret", default=os.environ.get(SECRET_ENV) or DEFAULT_SECRET)
    parser.add_argument("--receipt-delay", type=float, default=0.2, help="seconds, real time")
    parser.add_argument("--receipt-retry-base", type=float, default=0.5)
    parser.add_argument("--receipt-retry-max", type=float, default=30.0)
    parser.add_argument(
        "--receipt-retry-for", type=float, default=600.0, help="seconds before giving up"
    )
    args = parser.parse_args(argv)
    gw = Gateway(
        shared_clock(args.clock_file),
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        receipt_delay_s=args.receipt_delay,
        retry_base_s=args.receipt_retry_base,
        retry_max_s=args.receipt_retry_max,
        retry_for_s=args.receipt_retry_for,
        journal=Journal(args.data),
        seed=args.seed,
    )
    owed = gw.replay()
    runner = _GatewayRunner(
        gw,
        owed,
        service=service_app(gw),
        admin=admin_app(gw),
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        want_up=lambda: not gw.faults.down,
    )
    gw.runner = runner
    banner = (
        f"sms simulator: service http://{args.host}:{args.port}{MESSAGES_PATH}, "
        f"admin http://{args.host}:{args.admin_port}/stats; {len(gw.messages)} message(s) "
        f"reloaded from {args.data or 'no file'}, {len(owed)} receipt(s) owed"
    )
    return serve(runner, banner)


if __name__ == "__main__":
    raise SystemExit(main())
