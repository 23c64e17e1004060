"""config.toml: defaults, validation that names the key, `config check|show`, and start-up refusal."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from chkd.protocol.config import Config, ConfigError, config_to_toml, parse_config
from chkd.protocol.launch import module_argv

from conftest import Daemon


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1", "unknown key 'bogus'"),
        ("heartbeat_s = 'fast'", "'heartbeat_s': expected a number, got a string"),
        ("on_stall = 'panic'", "'on_stall': invalid enum value 'panic'"),
        ("[repos.web]\nmax_workers = 'five'", "'repos.web.max_workers': expected a whole number, got a string"),
        ("[repos.web]\ntest_cmd = 'pytest'", "'repos.web.test_cmd': expected a list, got a string"),
        ("[agents.claude]\nargs = []", "unknown key 'agents.claude.args'"),
        ("heartbeat_s = 0", "'heartbeat_s': must be a finite number from 0.05 to 3600"),
        ("heartbeat_s = 40", "'heartbeat_timeout_s': must be longer than heartbeat_s"),
        ("worktree_pattern = '../x'", "'worktree_pattern': must contain {task}"),
        ("max_workers = [", "not valid TOML"),
    ],
)
def test_bad_config_is_one_sentence_naming_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("config.toml"))
    message = str(info.value)
    assert expected in message
    assert message.startswith("config.toml: ") and message.endswith(".") and "\n" not in message


def test_defaults_and_overrides() -> None:
    cfg = parse_config('max_workers = 4\n[repos.web]\nmax_workers = 6\n', Path("c.toml"))
    assert cfg.max_workers_for("web") == 6
    assert cfg.max_workers_for("other") == 4
    assert cfg.agent_profile("demo") is not None and cfg.agent_profile("nope") is None
    assert Config().heartbeat_timeout_s == 30


def test_show_output_parses_back_to_the_same_settings() -> None:
    cfg = parse_config(
        'notify_cmd = ["sh", "-c", "cat > \\"x\\""]\n[repos."my repo"]\ntest_cmd = ["pytest", "-q"]\n'
        '[agents.claude]\ncmd = ["claude"]\nenv = { A = "1" }\n',
        Path("c.toml"),
    )
    again = parse_config(config_to_toml(cfg), Path("c.toml"))
    assert again == cfg
    tomllib.loads(config_to_toml(Config()))


def test_config_check_and_show_cli(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    res = d.ctl("config", "check")
    assert res.code == 0 and "defaults apply" in res.out
    d.write_config("max_workers = 5\n")
    assert d.ctl("config", "check").code == 0
    shown = d.ctl("config", "show")
    assert shown.code == 0 and "max_workers = 5" in shown.out
    assert d.ctl("--json", "config", "show").json()["max_workers"] == 5
    d.write_config("max_worker = 5\n")
    bad = d.ctl("config", "check")
    assert bad.code == 1
    assert bad.err.strip() == f"chkdctl: {d.paths.config_file}: unknown key 'max_worker'."


def test_daemon_refuses_to_start_with_bad_config(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    d.write_config("on_stall = 'sometimes'\n")
    proc = subprocess.run(
        module_argv("chkd.daemon.main", "--home", str(chkd_home)), capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 1
    assert "'on_stall': invalid enum value 'sometimes'" in proc.stderr
    assert "Traceback" not in proc.stderr
    # and autostart reports the same sentence instead of hanging
    res = d.ctl("ping", env={"CHKD_NO_AUTOSTART": "0"})
    assert res.code == 1 and "invalid enum value 'sometimes'" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("heartbeat_timeout_s = inf", "'heartbeat_timeout_s': must be a finite number from 0.1 to 86400"),
        ("heartbeat_s = nan", "'heartbeat_s': must be a finite number from 0.05 to 3600"),
        ("heartbeat_s = 0", "'heartbeat_s': must be a finite number from 0.05 to 3600"),
        ("stall_timeout_s = -inf", "'stall_timeout_s': must be a finite number from 0.5 to 604800"),
        ("abort_grace_s = nan", "'abort_grace_s': must be a finite number from 0.05 to 3600"),
        ("radar_interval_s = inf", "'radar_interval_s': must be a finite number from 0.05 to 3600"),
        ("max_workers = -1", "'max_workers': must be a whole number from 1 to 1000"),
        ("max_attempts = 0", "'max_attempts': must be a whole number from 1 to 1000"),
        ("test_timeout_s = -5", "'test_timeout_s': must be a finite number from 0.1 to 86400"),
        ("[repos.web]\nmax_workers = -3", "'repos.web.max_workers': must be a whole number from 1 to 1000"),
        ("[repos.web]\ntest_timeout_s = nan", "'repos.web.test_timeout_s': must be a finite number from 0.1 to 86400"),
        ("[repos.web]\ntest_cmd = []", "'repos.web.test_cmd': must name a program"),
        ("[repos.web]\nmain_branch = 'a..b'", "'repos.web.main_branch': git branch names cannot contain '..'"),
        ("[agents.x]\ncmd = []", "'agents.x.cmd': must name a program"),
        ("[agents.x]\ncmd = ['']", "'agents.x.cmd': must name a program"),
        ("[agents.x]\ncmd = ['  ', 'a']", "'agents.x.cmd': must name a program"),
        ("[agents.x]\ncmd = [\"a\\u0000b\"]", "'agents.x.cmd': cannot contain a NUL byte"),
        ("[agents.x]\ncmd = ['agent', '{nope}']", "'agents.x.cmd': unknown placeholder {nope}"),
        ("[agents.x]\ncmd = ['agent', '{title.__class__}']", "'agents.x.cmd': unknown placeholder {title.__class__}"),
        ("[agents.x]\ncmd = ['agent', '{json}']", "'agents.x.cmd': unknown placeholder {json}"),
        ("[agents.x]\ncmd = ['agent', 'a}b']", "'agents.x.cmd': a single '}' must be written '}}'"),
        ("worktree_pattern = '../{unknown}-{task}'", "'worktree_pattern': unknown placeholder {unknown}"),
        (
            "worktree_pattern = '../{task.__class__.__name__}-{task}'",
            "'worktree_pattern': unknown placeholder {task.__class__.__name__}",
        ),
        ("worktree_pattern = '/tmp/{task}'", "'worktree_pattern': must be relative to the repository"),
        ("worktree_pattern = '../../{task}'", "'worktree_pattern': must land inside the repository's parent directory"),
        ("worktree_pattern = 'a/../../../{task}'", "'worktree_pattern': must land inside the repository's parent"),
        ("worktree_pattern = 'wt/{task}'", "'worktree_pattern': must not land inside the repository"),
        ("worktree_pattern = '.git/{task}'", "'worktree_pattern': must not land inside the repository"),
        ("worktree_pattern = '../{repo}/{task}'", "'worktree_pattern': must not land inside the repository"),
        ("worktree_pattern = '{task}/..'", "'worktree_pattern': must not land inside the repository"),
        ("worktree_pattern = '../x'", "'worktree_pattern': must contain {task}"),
        ("branch_prefix = ''", "'branch_prefix': must not be empty"),
        ("branch_prefix = '-x/'", "'branch_prefix': git branch names cannot start with '-'"),
        ("branch_prefix = 'a..'", "'branch_prefix': git branch names cannot contain '..'"),
        ("branch_prefix = 'a b/'", "'branch_prefix': git branch names cannot contain a space"),
        ("branch_prefix = 'x.'", "'branch_prefix': must not end with '.'"),
        ("notify_cmd = ['']", "'notify_cmd': must name a program"),
        ("notify_cmd = ['notify', \"a\\u0000\"]", "'notify_cmd': cannot contain a NUL byte"),
        ("default_agent = 'nope'", "'default_agent': there is no agent profile 'nope'"),
    ],
)
def test_config_that_would_break_the_daemon_is_refused_naming_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("config.toml"))
    message = str(info.value)
    assert message.startswith("config.toml: " + expected), message
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "worktree_pattern = '../{repo}-{task}'",
        "worktree_pattern = '../wt/{repo}/{task}'",
        "worktree_pattern = '../{{x}}-{task}'",
        "worktree_pattern = './../{task}'",
        "branch_prefix = 'agents-'",
        "default_agent = 'x'\n[agents.x]\ncmd = ['agent', '--json', '{{\"a\": 1}}', '{prompt}', '--wt={worktree}']",
        "heartbeat_s = 0.05\nheartbeat_timeout_s = 0.2\nstall_timeout_s = 0.5\nabort_grace_s = 0.05",
    ],
)
def test_sensible_config_is_accepted(text: str) -> None:
    parse_config(text, Path("config.toml"))


def test_config_check_refuses_an_infinite_timeout(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    d.write_config("heartbeat_timeout_s = inf\n")
    res = d.ctl("config", "check")
    assert res.code == 1
    assert res.err.strip() == (
        f"chkdctl: {d.paths.config_file}: 'heartbeat_timeout_s': must be a finite number from 0.1 to 86400."
    )
