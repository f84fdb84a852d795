"""Consumer lag of every Liên thông group: ``python -m deploy.lag [--watch SECONDS]``.

Per group, topic and partition: committed offset, log end offset and their difference,
the same figures as Kafka's ``kafka-consumer-groups --describe`` (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.runtime.lag import LagProbe, PartitionLag


async def snapshot(probe: LagProbe, prefix: str) -> list[PartitionLag]:
    rows: list[PartitionLag] = []
    for group in await probe.groups():
        if group.startswith(prefix) and "lienthong-" in group:
            rows += await probe.group_lag(group)
    return rows


def render(rows: list[PartitionLag], all_partitions: bool) -> Group:
    table = Table(title="consumer lag (end offset − committed offset)")
    table.add_column("group")
    table.add_column("topic")
    for col in ("partition", "committed", "end", "lag"):
        table.add_column(col, justify="right")
    shown = [r for r in rows if all_partitions or r.lag or r.committed is not None]
    for r in shown:
        style = "red" if r.lag > 1000 else "yellow" if r.lag else ""
        committed = "-" if r.committed is None else str(r.committed)
        table.add_row(
            r.group, r.topic, str(r.partition), committed, str(r.end), str(r.lag), style=style
        )
    totals = Table.grid(padding=(0, 2))
    per_group: dict[str, int] = {}
    for r in rows:
        per_group[r.group] = per_group.get(r.group, 0) + r.lag
    for group, lag in sorted(per_group.items()):
        totals.add_row(group, f"total lag {lag}")
    return Group(table, totals)


async def main_async(bootstrap: str, prefix: str, watch: float | None, all_p: bool) -> None:
    console = Console()
    probe = LagProbe(bootstrap, "lienthong-lag-cli")
    try:
        if watch is None:
            console.print(render(await snapshot(probe, prefix), all_p))
            return
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(render(await snapshot(probe, prefix), all_p), refresh=True)
                await asyncio.sleep(watch)
    finally:
        await probe.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    p.add_argument("--prefix", default=os.environ.get("LIENTHONG_TOPIC_PREFIX", ""))
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--all", action="store_true", help="also partitions never committed")
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(a.bootstrap, a.prefix, a.watch, a.all))


if __name__ == "__main__":
    main()
