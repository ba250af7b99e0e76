"""Summarise py-spy's collapsed stacks: `python -m bench.profsum FILE [N]` (a development aid)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def main() -> None:
    """Print the functions with the most inclusive and exclusive samples."""
    path, top = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 30
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        exclusive[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"total samples {total}")
    for title, counter in (("exclusive", exclusive), ("inclusive", inclusive)):
        print(f"-- {title}")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:6.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
