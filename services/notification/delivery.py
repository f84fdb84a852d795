"""Delivery adapters: email over SMTP; desk and post notices are handed over by people."""

from __future__ import annotations

import asyncio
import contextlib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib
import asyncpg


class SmtpSender:
    """Sends over one kept-open SMTP connection, reconnecting once when it has dropped."""

    def __init__(self, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            self._client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
            )
            await self._client.connect()
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.quit()
        self._client = None

    async def send(self, n: asyncpg.Record) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = n["recipient"]
        msg["Subject"] = n["subject"]
        msg["Date"] = format_datetime(n["created_at"])
        # The notification id as Message-ID lets a mailbox drop a redelivered duplicate.
        msg["Message-ID"] = make_msgid(idstring=str(n["id"]), domain="lienthong.local")
        msg["X-Lienthong-Notification"] = str(n["id"])
        msg["X-Lienthong-Dossier"] = n["dossier_code"]
        msg.set_content(n["body_text"])
        msg.add_alternative(n["body_html"], subtype="html")
        async with self._lock:
            try:
                await (await self._connected()).send_message(msg)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError):
                self._client = None  # the server hung up an idle connection: once more
                await (await self._connected()).send_message(msg)
