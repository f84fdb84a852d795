"""Watch every Liên thông event live.

``python -m deploy.watch [--from-beginning] [--dossier CODE]``

Reads all contract topics without joining a consumer group (so it never steals partitions
from a service) and prints one line per event, in Asia/Ho_Chi_Minh time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from rich.console import Console

from contracts.topics import TOPICS
from deploy.kafka import dev_env
from services.runtime.calendar import VN_TZ
from services.runtime.kafka_auth import KafkaSecurity

COLOURS = {
    "procedure": "dim",
    "dossier": "cyan",
    "routing": "magenta",
    "consultation": "yellow",
    "notification": "green",
}
HIGHLIGHT = ("decision", "due_at", "appointment_at", "step", "legal_basis", "reason", "kind")


async def watch(bootstrap: str, prefix: str, from_beginning: bool, dossier: str | None) -> None:
    console = Console(soft_wrap=True)
    consumer = AIOKafkaConsumer(
        *[t.full_name(prefix) for t in TOPICS],
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **KafkaSecurity.from_env(None, dev_env()).kwargs(),
    )
    await consumer.start()
    console.print(f"[bold]watching[/] {bootstrap} ({len(TOPICS)} topics); Ctrl-C to stop")
    try:
        async for record in consumer:
            try:
                env = json.loads(record.value)
                at = datetime.fromisoformat(env["occurred_at"])
            except (ValueError, KeyError, TypeError):
                console.print(f"[red]{record.topic}[/] undecodable event at offset {record.offset}")
                continue
            if dossier and env.get("subject") != dossier:
                continue
            family = env["type"].split(".", 1)[0]
            data = env.get("data", {})
            extra = " ".join(f"{k}={_show(data[k])}" for k in HIGHLIGHT if data.get(k) is not None)
            console.print(
                f"{at.astimezone(VN_TZ):%H:%M:%S} [{COLOURS.get(family, 'white')}]"
                f"{env['type']:<30}[/] {env['subject']:<28} {env['producer']:<13} {extra}"
            )
    finally:
        await consumer.stop()


def _show(value: object) -> str:
    """Timestamps in local time, as an operator reads them; anything else as it is."""
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        with contextlib.suppress(ValueError):
            return f"{datetime.fromisoformat(value).astimezone(VN_TZ):%d/%m/%Y %H:%M}"
    return str(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    p.add_argument("--prefix", default=os.environ.get("LIENTHONG_TOPIC_PREFIX", ""))
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--dossier", help="only events about this dossier code")
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(a.bootstrap, a.prefix, a.from_beginning, a.dossier))


if __name__ == "__main__":
    main()
