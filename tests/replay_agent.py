"""A stand-in agent that prints a recorded Claude Code stream (tests/data/claude-stream) and exits.

`replay_agent.py SAMPLE [--exit N] [--sleep S] [--commit FILE] [ARGS...]`: the lines go to stdout
as the CLI writes them, so
the shim's stream-json reading can be tested without the CLI. `--sleep` waits between lines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "data" / "claude-stream"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sample")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--commit", help="write this file (the argv in it) and commit it, as an agent would")
    args, _rest = parser.parse_known_args()
    if args.commit:
        Path(args.commit).write_text("\n".join(sys.argv[1:]) + "\n")
        subprocess.run(["git", "add", args.commit], check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"replay: {args.commit}"], check=True)
    for line in (SAMPLES / args.sample).read_bytes().splitlines(keepends=True):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        if args.sleep:
            time.sleep(args.sleep)
    sys.exit(args.exit)


if __name__ == "__main__":
    main()
