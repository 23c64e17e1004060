"""chkd-demo-agent: a scripted stand-in for Claude, for the demo and the tests.

It reads its worker and task from the environment the shim sets (`CHKD_WORKER_ID`,
`CHKD_TASK_ID`), then works in `--steps` steps of `--step-s` seconds: each step
rewrites a file named after its task (or `--conflict-file`, so two workers collide),
commits it with plain git, and reports `chkdctl heartbeat --message "step i/N: …"`
with made-up token usage. Flags make it misbehave on purpose:

- `--fail-after N`: exit 1 after step N;
- `--hang`: stop all output and heartbeats but stay alive (a stalled agent);
- `--spawn-child`: leave a grandchild process in its group (abort must kill it too);
- `--usage-limit S`: after its first step, hit a usage limit that resets in S seconds — it prints
  the line Claude Code's stream-json would (`rate_limit_event`, status rejected, resetsAt),
  reports it with `chkdctl usage-limit --resets-at`, and exits 1 as Claude does.

`--ask QUESTION` makes it interactive (the `demo-interactive` profile runs it in tmux): it
prints the question, reports `chkdctl heartbeat --waiting QUESTION` (the worker turns
`waiting`), reads one line from its terminal (`chkdctl send W yes` types it), reports the
answer as activity, writes it into its file and goes on with its steps. End of input
before an answer exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _chkdctl() -> list[str]:
    beside = Path(sys.executable).parent / "chkdctl"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("chkdctl")
    if found and os.path.isabs(found):  # a relative PATH entry ('.') would find the worktree's own
        return [found]
    from chkd.protocol.launch import module_argv  # never the worktree's own chkd/ (it is our cwd)

    return module_argv("chkd.client.cli")


def say(text: str) -> None:
    print(text, flush=True)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def heartbeat(message: str, rng: random.Random, *extra: str) -> None:
    """Report progress; a missing daemon is not the agent's problem (it keeps working)."""
    tokens_in, tokens_out = rng.randint(500, 3000), rng.randint(100, 900)
    cost = round(tokens_in * 3e-6 + tokens_out * 15e-6, 6)
    proc = subprocess.run(
        [
            *_chkdctl(),
            "heartbeat",
            "--message",
            message,
            "--tokens-in",
            str(tokens_in),
            "--tokens-out",
            str(tokens_out),
            "--cost",
            str(cost),
            *extra,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        say(f"(heartbeat not delivered: {proc.stderr.strip() or proc.returncode})")


def ask(question: str, rng: random.Random) -> str | None:
    """Ask a person: the question on screen, the worker `waiting`, one line read from the terminal."""
    say(f"QUESTION: {question}")
    heartbeat(f"asking: {question}", rng, "--waiting", question)
    sys.stdout.write("answer> ")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        return None
    answer = line.strip()
    say(f"got the answer: {answer}")
    heartbeat(f"got the answer: {answer}", rng)
    return answer


def usage_limit(resets_in_s: float) -> int:
    """Stop at a usage limit the way Claude Code does: the stream-json line, then exit 1."""
    resets_at = time.time() + resets_in_s
    say(
        json.dumps(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {"status": "rejected", "resetsAt": int(resets_at), "rateLimitType": "five_hour"},
            }
        )
    )
    subprocess.run(
        [*_chkdctl(), "usage-limit", "--resets-at", f"{resets_at:.3f}", "--message", "5-hour usage limit reached"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    say(f"usage limit reached; it resets in {resets_in_s:g} s")
    return 1


def spawn_child() -> int:
    """A grandchild in our process group that would outlive us if nobody killed the group."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(1)", "chkd-demo-grandchild"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child.pid


def hang() -> None:
    while True:
        time.sleep(3600)


def work(
    steps: int,
    step_s: float,
    conflict_file: str | None,
    fail_after: int | None,
    rng: random.Random,
    answer: str | None = None,
    limit_in_s: float | None = None,
    once_file: str | None = None,
) -> int:
    worker = os.environ.get("CHKD_WORKER_ID", "w?")
    task = os.environ.get("CHKD_TASK_ID", "demo")
    target = Path(conflict_file) if conflict_file else Path(f"chkd-demo-{task.replace('/', '-')}.txt")
    told = f" (told: {answer})" if answer is not None else ""
    for i in range(1, steps + 1):
        time.sleep(step_s)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{task} by {worker}: step {i} of {steps}{told}\n")
        git("add", "--", str(target))
        commit = git("commit", "--quiet", "--no-verify", "-m", f"demo: {task}: step {i}/{steps}", "--", str(target))
        if commit.returncode != 0:
            say(f"step {i}/{steps}: git commit failed: {commit.stderr.strip()}")
            return 2
        sha = git("rev-parse", "HEAD").stdout.strip()
        say(f"step {i}/{steps}: edited {target} and committed {sha}")
        heartbeat(f"step {i}/{steps}: edited {target}", rng)
        if fail_after is not None and i >= fail_after:
            say(f"failing on purpose after step {i}")
            return 1
        if limit_in_s is not None and not (once_file and os.path.exists(once_file)):
            if once_file:
                Path(once_file).touch()
            return usage_limit(limit_in_s)
    say(f"all {steps} steps done")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chkd-demo-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="how many steps (default 5)")
    parser.add_argument("--step-s", type=float, default=0.5, help="seconds per step (default 0.5)")
    parser.add_argument("--conflict-file", metavar="PATH", help="edit this file instead of one named after the task")
    parser.add_argument("--fail-after", type=int, metavar="N", help="exit 1 after step N")
    parser.add_argument("--hang", action="store_true", help="go silent but stay alive (a stalled agent)")
    parser.add_argument("--spawn-child", action="store_true", help="leave a grandchild process in the group")
    parser.add_argument(
        "--ask",
        metavar="QUESTION",
        help="first ask a person QUESTION (worker `waiting`) and read the answer from the terminal",
    )
    parser.add_argument(
        "--usage-limit",
        type=float,
        metavar="S",
        help="after step 1, hit a usage limit that resets in S seconds (exit 1)",
    )
    parser.add_argument(
        "--limit-once", metavar="FILE", help="with --usage-limit: only when FILE does not exist yet (then create it)"
    )
    args = parser.parse_args(argv)
    if args.steps < 0 or args.step_s < 0:
        parser.error("--steps and --step-s cannot be negative")
    rng = random.Random(os.environ.get("CHKD_WORKER_ID", "demo"))
    say(
        f"demo agent: task {os.environ.get('CHKD_TASK_ID', '?')}, worker {os.environ.get('CHKD_WORKER_ID', '?')}, "
        f"{args.steps} steps of {args.step_s:g} s (pid {os.getpid()})"
    )
    if args.spawn_child:
        say(f"spawned grandchild pid {spawn_child()}")
    answer = None
    if args.ask is not None:
        answer = ask(args.ask, rng)
        if answer is None:
            say("no answer: the input ended")
            sys.exit(3)
    if args.hang:
        say("hanging: no more output or heartbeats")
        hang()
    sys.exit(
        work(
            args.steps, args.step_s, args.conflict_file, args.fail_after, rng, answer, args.usage_limit, args.limit_once
        )
    )


if __name__ == "__main__":
    main()
