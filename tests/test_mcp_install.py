"""`chkdctl mcp install`: the chkd entry goes into the project's .mcp.json beside the servers already
there (never clobbering them), with absolute paths; a file it cannot merge into is left untouched."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import BIN, make_repo


def ctl(*args: str, cwd: Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHKD_NO_AUTOSTART": "1"}
    env.pop("CHKD_HOME", None)
    if home is not None:
        env["CHKD_HOME"] = str(home)
    return subprocess.run(
        [str(BIN / "chkdctl"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_install_merges_with_existing_servers_and_is_idempotent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    other = {"type": "stdio", "command": "/usr/bin/other-mcp", "args": ["--flag"], "env": {"TOKEN": "x"}}
    (repo / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": other}, "extra": [1, 2]}))
    (repo / "src").mkdir()

    res = ctl("mcp", "install", cwd=repo / "src", home=tmp_path / "home")  # from a subdirectory: the repo root
    assert res.returncode == 0, res.stderr
    assert "added" in res.stdout
    doc = json.loads((repo / ".mcp.json").read_text())
    assert doc["mcpServers"]["other"] == other and doc["extra"] == [1, 2]  # others kept exactly
    entry = doc["mcpServers"]["chkd"]
    assert entry["type"] == "stdio" and Path(entry["command"]).is_absolute()
    assert Path(entry["command"]).name == "chkd-mcp" and os.access(entry["command"], os.X_OK)
    assert entry["env"] == {"CHKD_HOME": str(tmp_path / "home")}

    again = ctl("mcp", "install", "--repo", str(repo), cwd=tmp_path, home=tmp_path / "home")
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout


def test_print_writes_nothing_and_invalid_json_is_left_untouched(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    printed = ctl("mcp", "install", "--print", cwd=repo)
    assert printed.returncode == 0, printed.stderr
    assert "env" not in json.loads(printed.stdout)["mcpServers"]["chkd"]  # the default home: nothing to pin
    assert not (repo / ".mcp.json").exists()

    broken = '{"mcpServers": {"other": {"command": "x"},}'
    (repo / ".mcp.json").write_text(broken)
    res = ctl("mcp", "install", cwd=repo)
    assert res.returncode == 1 and "not valid JSON" in res.stderr and "nothing was changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert (repo / ".mcp.json").read_text() == broken

    (repo / ".mcp.json").write_text('{"mcpServers": ["not", "an", "object"]}')
    res = ctl("mcp", "install", cwd=repo)
    assert res.returncode == 1 and "'mcpServers'" in res.stderr, res.stderr
