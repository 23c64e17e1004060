"""chkd-mcp and the hook command, timed against a real daemon, next to their floors in the same run.

Prints one JSON object:
- start_to_first_call_ms: chkd-mcp process start -> `initialize` -> first answered tool call
  (`chkd_tasks`), p50 of --starts runs, with import_mcp_ms (a bare `import mcp.server.mcpserver`).
- tool_call_us: p50/p99 of --n `chkd_tasks` calls through the MCP SDK's stdio client, and
  client_us: the same TaskList request from an in-process `Client`; ratio_p50 = tool / client.
  Goal: tool call p50 <= 5 ms once started.
- worker_tool_us: p50/p99 of `chkd_heartbeat` from a worker's own chkd-mcp.
- hook_ms: p50/p99 wall time of a whole `chkdctl hook post-tool-use` process (stdin JSON, one
  message delivered every 5th run) next to bare_import_ms (`python -c "import zmq, msgspec, click"`).

Usage: python bench/mcp.py [--n 500] [--starts 3] [--hooks 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is bench/mcp.py: its own directory must not shadow the `mcp` package (the SDK).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from chkd.client import daemonctl  # noqa: E402
from chkd.client.client import Client  # noqa: E402
from chkd.protocol.messages import RepoAdd, Send, Spawn, TaskAdd, TaskList  # noqa: E402
from chkd.protocol.paths import resolve  # noqa: E402

sys.path.append(_HERE)
from floor import chkdd, pct  # noqa: E402

BIN = Path(sys.executable).parent
HOOK_STDIN = json.dumps(
    {
        "session_id": "bench",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "true"},
        "tool_response": {"stdout": ""},
    }
)


def stats(values: list[float], nd: int = 1) -> dict[str, float]:
    return {"p50": round(pct(values, 0.5), nd), "p99": round(pct(values, 0.99), nd)}


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return path


def params(env: dict[str, str], cwd: Path, worker: str | None = None) -> StdioServerParameters:
    env = dict(env)
    if worker:
        env["CHKD_WORKER_ID"] = worker
    return StdioServerParameters(command=str(BIN / "chkd-mcp"), env=env, cwd=str(cwd))


async def start_to_first_call(p: StdioServerParameters) -> float:
    t = time.perf_counter()
    async with stdio_client(p) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        res = await s.call_tool("chkd_tasks", {})
        assert not res.is_error, res.content
        return (time.perf_counter() - t) * 1000


async def tool_calls(p: StdioServerParameters, tool: str, args: dict[str, object], n: int) -> list[float]:
    async with stdio_client(p) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        for _ in range(20):  # warm-up (thread pool, sockets)
            await s.call_tool(tool, args)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            res = await s.call_tool(tool, args)
            out.append((time.perf_counter() - t) * 1e6)
            assert not res.is_error, res.content
        return out


def whole_process(argv: list[str], env: dict[str, str], runs: int, stdin: str = "") -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            argv, env=env, input=stdin, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--hooks", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        repo = make_repo(Path(tmp) / "proj")
        with chkdd(home) as (_daemon, env):
            paths = resolve(home)
            deadline = time.monotonic() + 20
            while not daemonctl._answers(paths, 0.5):
                if time.monotonic() > deadline:
                    raise SystemExit("chkdd did not answer")
            client = Client(paths, autostart=False)
            client.call(RepoAdd(path=str(repo)))
            for i in range(5):
                client.call(TaskAdd(title=f"task {i}", repo="proj"))
            client.call(TaskAdd(title="sleeper", id="S", repo="proj"))
            w = client.call(
                Spawn(repo="proj", task_id="S", cmd=[sys.executable, "-c", "import time; time.sleep(600)"]), timeout=60
            ).worker

            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import mcp.server.mcpserver"], check=True)
            import_ms = (time.perf_counter() - t) * 1000
            starts = [asyncio.run(start_to_first_call(params(env, repo))) for _ in range(a.starts)]
            tool = asyncio.run(tool_calls(params(env, repo), "chkd_tasks", {}, a.n))
            worker_tool = asyncio.run(tool_calls(params(env, repo, w.id), "chkd_heartbeat", {"message": "bench"}, a.n))
            body = TaskList(repo=str(repo))
            for _ in range(200):
                client.call(body)
            direct = []
            for _ in range(a.n):
                t = time.perf_counter()
                client.call(body)
                direct.append((time.perf_counter() - t) * 1e6)

            hook_env = {**env, "CHKD_WORKER_ID": w.id}
            hooks = []
            for i in range(a.hooks):
                if i % 5 == 0:
                    client.call(Send(to=w.id, text=f"note {i}"))
                hooks += whole_process([str(BIN / "chkdctl"), "hook", "post-tool-use"], hook_env, 1, HOOK_STDIN)
            bare = whole_process([sys.executable, "-c", "import zmq, msgspec, click"], env, a.hooks)
            client.close()
    tool_s, direct_s = stats(tool), stats(direct)
    print(
        json.dumps(
            {
                "start_to_first_call_ms": round(pct(starts, 0.5), 1),
                "import_mcp_ms": round(import_ms, 1),
                "tool_call_us": tool_s,
                "client_us": direct_s,
                "ratio_p50": round(tool_s["p50"] / direct_s["p50"], 2),
                "goal_tool_p50_le_5ms": tool_s["p50"] <= 5000,
                "worker_tool_us": stats(worker_tool),
                "hook_ms": stats(hooks),
                "bare_import_ms": stats(bare),
                "n": a.n,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
