"""``python -m bench`` (``make bench``): the pipeline benchmark, then the timer benchmark.

Arguments go to ``bench.pipeline`` (see ``python -m bench.pipeline --help``);
``--no-timers`` skips the timer benchmark."""

from __future__ import annotations

import asyncio
import sys

from bench import pipeline, timers


def main() -> None:
    argv = sys.argv[1:]
    skip_timers = "--no-timers" in argv
    pipeline.main([a for a in argv if a != "--no-timers"])
    if not skip_timers:
        asyncio.run(timers.main())


if __name__ == "__main__":
    main()
