"""Summarise py-spy's raw (collapsed) stacks: where each service spends its samples.

``python -m bench.profiles DIR`` prints, per ``DIR/<service>.txt``, the functions holding
the most samples inclusively (anywhere on the stack) and exclusively (on top)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()  # functions of this project, and the Kafka commit
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " " + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
            for f in stack.split(";")
        ]
        for f in set(frames):
            inclusive[f] += n
        for raw in set(stack.split(";")):
            if "(services/" in raw or "(contracts/" in raw or "commit" in raw.lower():
                ours[raw.split(" (")[0] + " " + raw.rsplit("/", 1)[-1].split(":")[0]] += n
        exclusive[frames[-1]] += n
    lines = [f"== {path.stem}: {total} samples"]
    lines.append("-- inclusive (share of samples with the function on the stack)")
    lines += [f"{n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines.append("-- this project's functions and Kafka offset commits, inclusive")
    lines += [f"{n / total:6.1%}  {f}" for f, n in ours.most_common(top)]
    lines.append("-- exclusive (on top of the stack)")
    lines += [f"{n / total:6.1%}  {f}" for f, n in exclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1])
    for path in sorted(folder.glob("*.txt")):
        if path.stem.endswith("summary"):
            continue
        print(summarise(path))
        print()


if __name__ == "__main__":
    main()
