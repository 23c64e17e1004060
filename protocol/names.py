"""Rules for names that end up in git refs and paths: branch names (git's own rules) and repository names.

Pure functions returning the broken rule as a phrase (or None), so each caller can put it
in its own sentence: `task add --id`, spec import, `branch_prefix` in config.toml,
`repo add --name`. Both sides use them (the CLI and config checks run without a daemon).
"""

from __future__ import annotations

#: Characters git never allows in a ref name (besides the control characters), from `git help check-ref-format`.
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")


def _is_control(ch: str) -> bool:
    return ch < " " or ch == "\x7f"


def branch_problem(name: str) -> str | None:
    """Why `git check-ref-format --branch NAME` refuses `name`, or None when git accepts it.

    The rules of git's refs.c for `refs/heads/NAME`: no control characters or any of
    `` ~^:?*[\\``, no `..` and no `@{`, no empty part between slashes, no part starting with
    `.` or ending with `.lock`, no trailing `.` or `/`; and for a branch: no leading `-`, not `HEAD`.
    """
    if not name:
        return "it is empty"
    bad = next((ch for ch in name if _is_control(ch) or ch in _REF_FORBIDDEN), None)
    if bad is not None:
        shown = "a space" if bad == " " else "a control character" if _is_control(bad) else f"'{bad}'"
        return f"git branch names cannot contain {shown}"
    if ".." in name:
        return "git branch names cannot contain '..'"
    if "@{" in name:
        return "git branch names cannot contain '@{'"
    if name.startswith("-"):
        return "git branch names cannot start with '-'"
    if name.startswith("/"):
        return "git branch names cannot start with '/'"
    if name.endswith("/"):
        return "git branch names cannot end with '/'"
    if name.endswith("."):
        return "git branch names cannot end with '.'"
    if name == "HEAD":
        return "git reserves the branch name 'HEAD'"
    for part in name.split("/"):
        if not part:
            return "git branch names cannot have an empty part between slashes ('//')"
        if part.startswith("."):
            return "a part of a git branch name cannot start with '.'"
        if part.endswith(".lock"):
            return "a part of a git branch name cannot end with '.lock'"
    return None


#: Longest repository name (it becomes a directory name beside the repository).
MAX_REPO_NAME = 100


def repo_name_problem(name: str) -> str | None:
    """Why `name` cannot name a repository in chkd (it becomes part of worktree paths), or None."""
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_REPO_NAME:
        return f"it is longer than {MAX_REPO_NAME} characters"
    if any(_is_control(ch) or "\x80" <= ch <= "\x9f" for ch in name):
        return "it contains a control character"
    if "/" in name or "\\" in name:
        return "it cannot contain '/' or '\\'"
    if ".." in name:
        return "it cannot contain '..'"
    if name[0] in "-.":
        return "it cannot start with '-' or '.'"
    if name != name.strip():
        return "it cannot start or end with a space"
    return None
