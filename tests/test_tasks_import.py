"""`chkdctl task import FILE [--dry-run]` against a real daemon: counts, idempotence, safety, bad files."""

from __future__ import annotations

from pathlib import Path

from chkd.protocol.messages import Ping

from conftest import Daemon

SPEC = """\
# Shop

## Site Design
- [ ] [P1] **SD.1 Landing page** - hero and nav #ui
  - [x] hero
  - [ ] nav
- [x] **SD.2 Palette**
- [~] **SD.3 Product page**
- [-] **SD.4 Carousel**
- [!] **SD.5 Checkout** - waits for the vendor
- [ ] **Cart drawer**

```
- [ ] **SD.9 fenced, ignored**
```

## Backend
- [ ] [P0] **BE.1 Orders API** #api
- [?] what is this
"""


def tasks_by_id(daemon: Daemon, repo: Path) -> dict[str, dict]:
    return {t["id"]: t for t in daemon.ctl("task", "list", "--json", cwd=repo).json()}


def write(repo: Path, text: str) -> Path:
    path = repo / "docs" / "SPEC.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_import_dry_run_then_import_then_reimport_changes_nothing(daemon: Daemon, repo: Path) -> None:
    write(repo, SPEC)
    dry = daemon.ctl("task", "import", "docs/SPEC.md", "--dry-run", cwd=repo)
    assert dry.code == 0, dry
    assert dry.out.splitlines()[0] == (
        "Dry run, nothing changed docs/SPEC.md into proj: 7 new, 0 updated, 0 unchanged, 0 skipped."
    )
    assert "  would be new: SD.1, SD.2, SD.3, SD.4, SD.5, SD.6, BE.1" in dry.out
    assert "line 19: unknown check mark '[?]'" in dry.out
    assert daemon.ctl("repo", "list", "--json").json() == []  # a dry run registers nothing either

    res = daemon.ctl("task", "import", "docs/SPEC.md", "--json", cwd=repo)
    assert res.code == 0, res
    report = res.json()
    assert (len(report["new"]), report["updated"], report["unchanged"], report["skipped"]) == (7, [], [], [])
    assert report["problems"] == [
        {"line": 19, "text": "- [?] what is this", "reason": "unknown check mark '[?]' (use [ ], [x], [~], [-] or [!])"}
    ]
    tasks = tasks_by_id(daemon, repo)
    assert {tid: (t["status"], t["held"], t["priority"]) for tid, t in tasks.items()} == {
        "SD.1": ("pending", False, 1),
        "SD.2": ("done", False, 2),
        "SD.3": ("pending", False, 2),
        "SD.4": ("cancelled", False, 2),
        "SD.5": ("pending", True, 2),
        "SD.6": ("pending", False, 2),
        "BE.1": ("pending", False, 0),
    }
    assert tasks["SD.1"]["description"] == "hero and nav\n\n- [x] hero\n- [ ] nav"
    assert tasks["SD.1"]["tags"] == ["ui"] and tasks["SD.6"]["title"] == "Cart drawer"

    seq = daemon.call(Ping()).last_seq
    before = daemon.ctl("task", "list", "--json", cwd=repo).out
    again = daemon.ctl("task", "import", "docs/SPEC.md", cwd=repo)
    assert again.code == 0 and again.out.splitlines()[0] == (
        "Imported docs/SPEC.md into proj: 0 new, 0 updated, 7 unchanged, 0 skipped."
    )
    assert daemon.ctl("task", "list", "--json", cwd=repo).out == before
    assert daemon.call(Ping()).last_seq == seq  # not even an event


def test_reimport_updates_but_never_sets_back_done_or_running_and_lists_vanished(daemon: Daemon, repo: Path) -> None:
    write(repo, SPEC)
    assert daemon.ctl("task", "import", "docs/SPEC.md", cwd=repo).code == 0
    claimed = daemon.ctl("task", "claim", "--worker", "peer-1", cwd=repo)
    assert claimed.out.startswith("BE.1\t")  # P0 first
    changed = (
        SPEC.replace("Landing page", "Landing page v2")
        .replace("[P0] **BE.1 Orders API**", "[P2] **BE.1 Orders API v2**")
        .replace("- [x] **SD.2 Palette**", "- [ ] **SD.2 Palette**")
        .replace("- [ ] **Cart drawer**\n", "")
        .replace("- [~] **SD.3", "- [x] **SD.3")
        .replace("- [!] **SD.5", "- [ ] **SD.5")
    )
    write(repo, changed)
    dry = daemon.ctl("task", "import", "docs/SPEC.md", "--dry-run", "--json", cwd=repo).json()
    assert (dry["new"], dry["updated"], dry["skipped"]) == ([], ["SD.1", "SD.3", "SD.5"], ["BE.1"])
    assert dry["changes"] == {"SD.1": ["title"], "SD.3": ["status"], "SD.5": ["held"], "BE.1": ["priority", "title"]}
    dry_text = daemon.ctl("task", "import", "docs/SPEC.md", "--dry-run", cwd=repo).out
    assert "  would be updated: SD.1 (title), SD.3 (status), SD.5 (held)" in dry_text
    assert "  skipped: BE.1 (priority, title)" in dry_text
    assert tasks_by_id(daemon, repo)["SD.1"]["title"] == "Landing page"  # dry run changed nothing
    res = daemon.ctl("task", "import", "docs/SPEC.md", cwd=repo)
    assert res.code == 0, res
    assert res.out.splitlines()[0] == "Imported docs/SPEC.md into proj: 0 new, 3 updated, 2 unchanged, 1 skipped."
    assert "  no longer in the file (kept): SD.6" in res.out
    assert "warning: BE.1 is claimed; its changes in docs/SPEC.md (line 17) were not applied" in res.out
    tasks = tasks_by_id(daemon, repo)
    assert tasks["SD.1"]["title"] == "Landing page v2"
    assert tasks["SD.2"]["status"] == "done"  # [ ] in the file never sets a done task back
    assert tasks["SD.3"]["status"] == "done"  # forward is fine
    assert not tasks["SD.5"]["held"]
    assert (tasks["BE.1"]["title"], tasks["BE.1"]["status"], tasks["BE.1"]["claimed_by"]) == (
        "Orders API",
        "claimed",
        "peer-1",
    )
    assert "SD.6" in tasks  # vanished tasks are listed, never deleted
    history = daemon.ctl("task", "show", "SD.1", "--json", cwd=repo).json()["history"]
    assert [e["kind"] for e in history] == ["task.added", "task.edited"]


def test_bad_files_are_clear_errors_and_change_nothing(daemon: Daemon, repo: Path) -> None:
    daemon.ctl("task", "add", "seed", cwd=repo)
    before = daemon.ctl("task", "list", "--json", cwd=repo).out
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (repo / "latin1.md").write_bytes("- [ ] caf\xe9".encode("latin-1"))
    cases = [
        (["nope.md"], "chkdctl: nope.md does not exist."),
        (["logo.png"], "chkdctl: logo.png is a binary file, not a markdown checklist."),
        (["docs"], None),
        (["latin1.md"], "chkdctl: latin1.md is not UTF-8 text, so it is not a markdown checklist chkd can read."),
    ]
    (repo / "docs").mkdir()
    for args, message in cases:
        res = daemon.ctl("task", "import", *args, cwd=repo)
        assert res.code == 1, res
        assert "Traceback" not in res.err
        if message:
            assert res.err.strip() == message
        else:
            assert "is a directory" in res.err
    assert daemon.ctl("task", "list", "--json", cwd=repo).out == before


def test_a_plain_markdown_checklist_imports_too(daemon: Daemon, repo: Path) -> None:
    write(repo, SPEC)
    daemon.ctl("task", "import", "docs/SPEC.md", cwd=repo)
    long_title = "word " * 120
    (repo / "TODO.md").write_text(
        f"Things:\n\n- [ ] buy milk #my_tag\n- [x] call Bob #phone\n- [ ] {long_title}\n- [ ] odd tag #café\n"
    )
    res = daemon.ctl("task", "import", "TODO.md", "--json", cwd=repo)
    report = res.json()
    assert report["new"] == ["T.1", "T.2"]
    assert report["vanished"] == []  # the spec's tasks are not this file's
    assert [(p["line"], p["reason"]) for p in report["problems"]] == [
        (5, "The task title is 599 characters; the limit is 500."),
        (6, "'café' is not a valid tag; use letters, digits and _ . - / :."),
    ]
    tasks = tasks_by_id(daemon, repo)
    assert (tasks["T.1"]["title"], tasks["T.2"]["status"], tasks["T.2"]["tags"]) == ("buy milk", "done", ["phone"])
    assert tasks["T.1"]["tags"] == ["my_tag"] and "T.3" not in tasks
