"""Every top-level chkdctl command: its name, the module in chkd.client.commands that defines it,
and the line `chkdctl --help` shows for it.

This table is why chkdctl starts fast: `chkdctl X` imports only X's module, and `chkdctl --help`
imports none (building all ~300 click objects costs more than the rest of start-up together).
tests/test_cli_index.py keeps it equal to the commands themselves (names, modules, help lines).
"""

from __future__ import annotations

INDEX: dict[str, tuple[str, str]] = {
    "abort": ("workers", "Stop a worker: SIGTERM to its process group, SIGKILL after abort_grace_s."),
    "agents": (
        "agents",
        ('List the agent profiles (built-in and [agents.NAME] in config.toml): command, output, tags, resume.'),
    ),
    "approve": ("merge", "Approve a merge waiting for review; it lands (re-checked if the target moved)."),
    "attach": (
        "terminal",
        ("Attach this terminal to an interactive WORKER's tmux session; returns when you detach (Ctrl-b d)."),
    ),
    "attic": ("workers", "Work kept from forced removals (refs/chkd/attic/<worker>)."),
    "config": ("core", "Check or show config.toml (works without the daemon)."),
    "conflicts": ("merge", "The conflict radar: workers changing the same files, and whether they would conflict."),
    "cost": ("autopilot", "Tokens and US dollars the agents reported, summed per task, worker, day or repository."),
    "daemon": ("daemon", "Start, stop and inspect the chkdd daemon of this home."),
    "db": ("db", "The daemon's SQLite database: online backup and integrity check."),
    "demo": ("demo", "Run a real session on the autopilot in a temporary repository and show it live."),
    "diff": ("merge", "The worker's change against the target (from their merge base; uncommitted edits included)."),
    "doctor": (
        "doctor",
        ('Check git, the run/state directories, the config, the daemon, workers, leftovers and the database.'),
    ),
    "done": (
        "workers",
        ('(Agents) Finish: commit uncommitted work as `chkd: <task>: <summary>`, worker done, task in review.'),
    ),
    "events": ("liveness", "List the event history (newest last)."),
    "gc": (
        "liveness",
        (
            'Find leftovers of what chkd itself created and recorded: finished workers whose worktree is gone (or'
            " an empty directory a spawn left), merged workers' left-behind worktrees and branches, dead workers "
            "older than a week, and worktrees carrying chkd's owner marker that no worker records."
        ),
    ),
    "heartbeat": ("workers", "(Agents) Report progress: proves the agent is getting somewhere."),
    "hook": (
        "messages",
        (
            '(Claude Code hooks, inside a worker) Report activity; post-tool-use also hands the model its unread '
            'messages (printed as hookSpecificOutput.additionalContext, each message once).'
        ),
    ),
    "inbox": (
        "messages",
        (
            "A worker's messages, oldest first, and whether the agent has received each (reading them here does "
            'not mark them read).'
        ),
    ),
    "logs": (
        "workers",
        (
            "The agent's output (state/workers/<id>.log), printed raw, byte for byte as the agent wrote it: "
            'unlike every other command, terminal escapes in it are not made visible (pipe it through `cat -v` or'
            ' `less` to see them as text).'
        ),
    ),
    "mcp": ("mcp_install", "chkd's MCP server (chkd-mcp) for Claude Code and other MCP clients."),
    "merge": ("merge", "Merge a done worker's branch into the target: conflict check, test gate, (review), CAS."),
    "merges": ("merge", "The merge queue: active merges and the latest finished ones."),
    "pause": ("workers", "Freeze a worker's agent (SIGSTOP to its process group)."),
    "peek": (
        "terminal",
        ("Print WORKER's screen as it is now (an interactive worker), or its log's last lines (a detached one)."),
    ),
    "ping": ("core", "Ask the daemon for its version, pid, uptime and counts (starts it if needed)."),
    "ps": ("workers", "Alias of `workers`."),
    "reject": ("merge", "Reject a merge waiting for review; the worker goes back to working."),
    "repo": ("repos", "Repositories chkd serves (one daemon serves many)."),
    "resume": ("workers", "Let a paused worker go on (SIGCONT)."),
    "resume-agent": (
        "agents",
        ("Start WORKER's exited agent again in its worktree, continuing its session (the profile's `resume`)."),
    ),
    "rm": ("workers", "Remove a finished worker's worktree and branch; refuses if that would lose work."),
    "run": (
        "autopilot",
        (
            'Run the queue unattended: keep up to N workers on the most urgent ready tasks, start a dependent '
            'task as soon as its dependencies are merged, retry failures, merge what finishes.'
        ),
    ),
    "send": (
        "terminal",
        (
            'Send TEXT to WORKER (`send W TEXT...`, or `send --all TEXT...`): an interactive worker gets it typed'
            ' into its terminal (then Enter), which answers a waiting worker; a detached one gets a message it '
            'reads at its next tool use (see `chkdctl inbox W`).'
        ),
    ),
    "service": ("service", "Run chkdd as a user service (systemd on Linux, launchd on macOS)."),
    "sessions": ("messages", "MCP sessions (chkd-mcp connections): masters' and workers' own."),
    "spawn": ("workers", "Start a worker on TASK_ID (or --next) in its own worktree and branch."),
    "stats": ("autopilot", "Throughput, time to merge, conflict rate, speed-up, queue, utilisation, cost, ETA."),
    "status": ("core", "Overview: repositories, tasks and workers by status."),
    "task": ("tasks", "The task queue: add, list, claim, import a spec, dependencies."),
    "top": ("top", "The live dashboard: worker cards, task queue, events, merges, conflict radar, logs."),
    "update": (
        "merge",
        ("Merge the target into the worker's branch in its worktree (conflicts: markers left for the agent)."),
    ),
    "usage-limit": ("autopilot", "For agents inside a worker: report a usage limit (or a 429)."),
    "watch": ("liveness", "Stream events live as they happen, in order, with no gaps; survives a daemon restart."),
    "worker": ("workers", "One worker in detail."),
    "worker-status": ("workers", "(Agents) Print what the daemon wants: working, paused, aborted, …"),
    "workers": (
        "workers",
        ("List workers: status, task, age, last heartbeat, last message (a waiting worker's question), branch."),
    ),
}
