"""chkdctl start-up: `chkdctl --help` and `chkdctl ping --help` next to a bare
`python -c "import zmq, msgspec, click"` measured in the same run (goal: ≤ 1.2×).

Prints JSON. Runs are interleaved so a noisy machine slows both sides alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHKDCTL = str(Path(sys.executable).parent / "chkdctl")
CASES = {
    "help": [CHKDCTL, "--help"],
    "command_help": [CHKDCTL, "ping", "--help"],
    "baseline": [sys.executable, "-c", "import zmq, msgspec, click"],
}


def once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for argv in CASES.values():
        once(argv)  # warm the page cache and .pyc files
    for _ in range(args.runs):
        for name, argv in CASES.items():
            samples[name].append(once(argv))
    median = {name: round(statistics.median(xs), 1) for name, xs in samples.items()}
    ratio = round(median["help"] / median["baseline"], 2)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "median_ms": median,
                "ratio_help_to_baseline": ratio,
                "command_ratio": round(median["command_help"] / median["baseline"], 2),
                "goal_ratio": 1.2,
                "within_goal": ratio <= 1.2,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
