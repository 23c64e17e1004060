"""The spec checklist parser, pure: chkd's `docs/SPEC.md` format and plain markdown checklists.

    # Title                          the spec's title
    ## Site Design                   an area (code SD); `### Phase 1` is not an area
    - [ ] [P1] **SD.13 Title** - description #tag
      - [x] sub-item                 (kept in the description, with its check mark)
      > story / **Key requirements:** / **Files to change:** / **Testing:** blocks, too
    - ✓ text                         a done item

Check marks: ` ` pending, `x`/`X` done, `~` in progress (imported pending), `-` skipped
(imported cancelled), `!` blocked (imported held). Lines inside code fences are ignored.
An item without an id, or repeating an id already used in the file, gets the next free
number in its area (the repeat also gets a warning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Well-known area names and their codes; any other name → its initials (at most 3 letters).
AREA_CODES: dict[str, str] = {
    "site design": "SD",
    "frontend": "FE",
    "backend": "BE",
    "future areas": "FUT",
    "reference": "REF",
    "skills": "SKL",
    "overview": "OV",
}
#: Items before any `## Area` heading (plain checklists) use this code.
DEFAULT_AREA = "T"

STATES = {" ": "pending", "x": "done", "X": "done", "~": "in_progress", "-": "skipped", "!": "blocked"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")  # the closing #s are cut by _heading_name (a regex would backtrack)
_ITEM = re.compile(r"^[-*+]\s+\[(.?)\]\s*(.*)$")
_DONE_ITEM = re.compile(r"^[-*+]\s+✓\s*(.*)$")
_LOOSE_ITEM = re.compile(r"^[-*+]\s+\[[^\]]{0,2}\](?!\()")  # looks like an item but the check mark is unreadable
_PRIORITY = re.compile(r"\[P(\d+)\]\s*", re.IGNORECASE)
_BOLD = re.compile(r"^\*\*(.+?)\*\*\s*(.*)$")
_ID = re.compile(r"^([A-Z][A-Z0-9]*)\.(\d+)(?:[:.])?(?=\s|$)\s*(.*)$")
_TAG = re.compile(r"(?<!\S)#([A-Za-z][\w./:-]*)")
_SEP = re.compile(r"^(?:-|—|–|:)\s*")
_BLOCK_LABEL = re.compile(r"^\*\*[^*]+:\*\*")


@dataclass
class SpecItem:
    id: str
    title: str
    state: str  # pending | done | in_progress | skipped | blocked
    line: int
    area: str
    priority: int | None = None
    tags: list[str] = field(default_factory=list)
    description: str = ""
    explicit_id: bool = True

    @property
    def status(self) -> str:
        """The task status this item imports as."""
        return {"done": "done", "skipped": "cancelled"}.get(self.state, "pending")

    @property
    def held(self) -> bool:
        return self.state == "blocked"


@dataclass
class Problem:
    line: int
    text: str
    reason: str


@dataclass
class Spec:
    title: str | None = None
    areas: dict[str, str] = field(default_factory=dict)  # code → name, in order
    items: list[SpecItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _heading_name(text: str) -> str:
    """A heading's text without its optional closing #s: `Area ##` → `Area`."""
    return text.rstrip().rstrip("#").strip()


def area_code(name: str) -> str:
    """`Site Design` → SD, `Data Model` → DM, `Billing (BIL)` → BIL."""
    clean = re.sub(r"^\s*(?:\d+[.)]\s*)+", "", name).strip()
    explicit = re.search(r"\(([A-Z][A-Z0-9]{0,4})\)\s*$", clean)
    if explicit:
        return explicit.group(1)
    if clean.endswith(")") and "(" in clean:  # a trailing parenthesis: `Billing (later)` → `Billing`
        clean = clean[: clean.index("(")].strip()
    known = AREA_CODES.get(clean.lower())
    if known:
        return known
    words = re.findall(r"[A-Za-z0-9]+", clean)
    initials = "".join(w[0] for w in words if w[0].isalpha()).upper()[:3]
    return initials or DEFAULT_AREA


@dataclass
class _Draft:
    item: SpecItem
    indent: int
    extra: list[str] = field(default_factory=list)
    inline: str = ""


def parse(text: str) -> Spec:
    """Parse a spec or checklist. Never raises: unreadable lines become `problems`."""
    spec = Spec()
    drafts: list[_Draft] = []
    current: _Draft | None = None
    area = DEFAULT_AREA
    in_fence = False
    pending_blank = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _HEADING.match(line)
        if heading:
            current = None
            level, name = len(heading.group(1)), _heading_name(heading.group(2))
            if level == 1 and spec.title is None:
                spec.title = name
            elif level == 2:
                area = area_code(name)
                spec.areas.setdefault(area, name)
            continue
        if not line.strip():
            pending_blank = current is not None
            continue
        top = not line[:1].isspace()
        if top and (_ITEM.match(line) or _DONE_ITEM.match(line) or _LOOSE_ITEM.match(line)):
            current = _start_item(spec, line, number, area)
            if current is not None:
                drafts.append(current)
            pending_blank = False
            continue
        if current is None:
            continue
        if top and pending_blank and not _belongs_to_item(line):
            current = None  # prose after a blank line ends the item
            continue
        if pending_blank:
            current.extra.append("")
            pending_blank = False
        current.extra.append(line)
    _assign_ids(spec, drafts)
    for d in drafts:
        d.item.description = _description(d)
        spec.items.append(d.item)
    return spec


def _belongs_to_item(line: str) -> bool:
    """Top-level lines that still continue an item: its story and metadata blocks and their lists."""
    return line.startswith((">", "- ", "* ", "+ ")) or bool(_BLOCK_LABEL.match(line))


def _start_item(spec: Spec, line: str, number: int, area: str) -> _Draft | None:
    done = _DONE_ITEM.match(line)
    if done:
        mark, rest = "x", done.group(1)
    else:
        m = _ITEM.match(line)
        if m is None or m.group(1) not in STATES:
            shown = m.group(1) if m else line[line.find("[") + 1 : line.find("]")] if "]" in line else "?"
            spec.problems.append(
                Problem(number, line.strip(), f"unknown check mark '[{shown}]' (use [ ], [x], [~], [-] or [!])")
            )
            return None
        mark, rest = m.group(1), m.group(2)
    priority = None
    pm = _PRIORITY.search(rest)
    if pm:
        digits = pm.group(1).lstrip("0") or "0"
        value = int(digits) if len(digits) <= 3 else 999  # never int() thousands of digits
        rest = (rest[: pm.start()] + rest[pm.end() :]).strip()
        if value > 4:
            shown = digits if len(digits) <= 10 else digits[:10] + "…"
            spec.problems.append(
                Problem(
                    number, line.strip(), f"priority P{shown} does not exist (P0..P4); imported with the default P2"
                )
            )
        else:
            priority = value
    tags = list(dict.fromkeys(t.rstrip(".,;:") for t in _TAG.findall(rest)))
    rest = _TAG.sub("", rest).strip()
    bold = _BOLD.match(rest)
    if bold:
        head, tail = bold.group(1).strip(), _SEP.sub("", bold.group(2).strip(), count=1).strip()
    else:
        head, tail = rest, ""
    item_id, title = None, head
    idm = _ID.match(head)
    if idm:
        item_id, title = f"{idm.group(1)}.{idm.group(2)}", idm.group(3).strip()
    title = " ".join(title.split())
    if not title:
        spec.problems.append(Problem(number, line.strip(), "the item has no title"))
        return None
    item = SpecItem(
        id=item_id or "",
        title=title,
        state=STATES[mark],
        line=number,
        area=area,
        priority=priority,
        tags=tags,
        explicit_id=item_id is not None,
    )
    return _Draft(item=item, indent=0, inline=tail)


def _assign_ids(spec: Spec, drafts: list[_Draft]) -> None:
    """Explicit ids keep their first item; the rest get the next free number in their area."""
    top: dict[str, int] = {}  # per area code, the highest number used so far
    owner: dict[str, _Draft] = {}
    for d in drafts:
        if d.item.explicit_id and d.item.id not in owner:
            owner[d.item.id] = d
            code, digits = d.item.id.rsplit(".", 1)
            if len(digits) <= 18:  # a longer number is refused as an id on import; never int() it
                top[code] = max(top.get(code, 0), int(digits))
    for d in drafts:
        if d.item.explicit_id and owner.get(d.item.id) is d:
            continue
        code = d.item.area
        num = top.get(code, 0) + 1
        top[code] = num
        new_id = f"{code}.{num}"
        if d.item.explicit_id:
            first = owner[d.item.id].item.line
            spec.warnings.append(
                f"line {d.item.line}: id {d.item.id} is already used on line {first}; this item becomes {new_id}"
            )
        d.item.id = new_id


def _description(d: _Draft) -> str:
    lines = list(d.extra)
    while lines and not lines[-1].strip():
        lines.pop()
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
    cut = min(indents, default=0)
    body = "\n".join(ln[cut:] if ln.strip() else "" for ln in lines)
    parts = [p for p in (d.inline, body) if p]
    return "\n\n".join(parts)
