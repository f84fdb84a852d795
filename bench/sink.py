"""A lean SMTP sink in a process of its own, so its CPU time is counted apart from the load
generator's: ``python -m bench.sink PORT``. It accepts every message and keeps only a
count (the tests' ``deploy.local.SmtpSink`` parses and keeps each one)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


def main() -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Handler.count += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
