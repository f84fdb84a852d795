"""Consumer lag of every Liên thông group: ``python -m deploy.lag [--watch SECONDS]``.

Per group, topic and partition: committed offset, log end offset and their difference,
the same figures as Kafka's ``kafka-consumer-groups --describe`` (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from rich.console import Console
from rich.live import Live
from rich.table import Table

from deploy.kafka import dev_env
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.lag import LagProbe, PartitionLag


async def snapshot(probe: LagProbe, prefix: str) -> list[PartitionLag]:
    rows: list[PartitionLag] = []
    for group in await probe.groups():
        if group.startswith(prefix) and "lienthong-" in group:
            rows += await probe.group_lag(group)
    return rows


def render(rows: list[PartitionLag], partitions: bool) -> Table:
    """One row per group and topic (the sums), or per partition with ``partitions``."""
    table = Table(title="consumer lag = log end offset − committed offset", expand=False)
    table.add_column("group", overflow="fold")
    table.add_column("topic", overflow="fold")
    if partitions:
        table.add_column("partition", justify="right")
    for col in ("committed", "end", "lag"):
        table.add_column(col, justify="right")
    if partitions:
        for r in rows:
            committed = "-" if r.committed is None else str(r.committed)
            table.add_row(
                r.group,
                r.topic,
                str(r.partition),
                committed,
                str(r.end),
                str(r.lag),
                style=_style(r.lag),
            )
        return table
    sums: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        acc = sums.setdefault((r.group, r.topic), [0, 0, 0])
        acc[0] += r.committed or 0
        acc[1] += r.end
        acc[2] += r.lag
    for (group, topic), (done, end, lag) in sums.items():
        table.add_row(group, topic, str(done), str(end), str(lag), style=_style(lag))
    return table


def _style(lag: int) -> str:
    return "red" if lag > 1000 else "yellow" if lag else ""


async def main_async(bootstrap: str, prefix: str, watch: float | None, per_p: bool) -> None:
    console = Console()
    probe = LagProbe(bootstrap, "lienthong-lag-cli", KafkaSecurity.from_env(None, dev_env()))
    try:
        if watch is None:
            console.print(render(await snapshot(probe, prefix), per_p))
            return
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(render(await snapshot(probe, prefix), per_p), refresh=True)
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
    p.add_argument("--partitions", action="store_true", help="one row per partition")
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(a.bootstrap, a.prefix, a.watch, a.partitions))


if __name__ == "__main__":
    main()
