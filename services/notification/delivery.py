"""Delivery adapters: email over SMTP; desk and post notices are handed over by people."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib
import asyncpg


class SmtpSender:
    def __init__(self, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout

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
        await aiosmtplib.send(msg, hostname=self.host, port=self.port, timeout=self.timeout)
