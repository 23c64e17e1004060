"""The spec checklist parser (daemon/spec.py), tested directly on a realistic spec."""

from __future__ import annotations

import pytest

from chkd.daemon import spec

SPEC = """\
# Shop Rewrite

Some intro prose that is not a task.

## Overview
- [x] **OV.1 Goals written down**

## Site Design
- [ ] [P1] **SD.1 Landing page** - hero, nav and footer #ui #web
  > As a visitor I want to see what the shop sells at a glance.
  **Key requirements:**
  - [x] hero image
  - [ ] nav with search
    - [ ] search suggestions
  **Files to change:**
  - site/index.html
  **Testing:**
  - screenshot test
- [x] **SD.2 Colour palette**
- [X] **SD.3 Fonts** - chosen
- [~] **SD.4 Product page** - half done
- [-] **SD.5 Carousel** - dropped
- [!] [P0] **SD.6 Checkout** - waits for the payment provider #blocked-on-vendor
- [ ] **Cart drawer** - no id: gets the next free number
- [ ] **SD.1 Duplicate of the landing page**
- ✓ Logo approved

### Phase 2: polish
- [ ] [P4] **SD.20 Animations**

```markdown
- [ ] **SD.99 Inside a code fence** - must be ignored
## Not An Area
```

## Backend
- [ ] [P0] **BE.1 Orders API** #api
- [ ] **Payments** - Stripe

## Future Areas
- [ ] **FUT.1 Mobile app**

## Data Model
- [ ] plain checklist line without bold #db
- [?] unreadable check mark
- [ ] [P9] **DM.7 Bad priority**
- [ ]

Closing prose after a blank line.
"""


@pytest.fixture(scope="module")
def doc() -> spec.Spec:
    return spec.parse(SPEC)


def by_id(doc: spec.Spec) -> dict[str, spec.SpecItem]:
    return {i.id: i for i in doc.items}


def test_title_and_areas(doc: spec.Spec) -> None:
    assert doc.title == "Shop Rewrite"
    assert list(doc.areas) == ["OV", "SD", "BE", "FUT", "DM"]
    assert doc.areas["SD"] == "Site Design"


@pytest.mark.parametrize(
    "name, code",
    [
        ("Site Design", "SD"),
        ("Frontend", "FE"),
        ("Backend", "BE"),
        ("Future Areas", "FUT"),
        ("Reference", "REF"),
        ("Skills", "SKL"),
        ("Overview", "OV"),
        ("Data Model", "DM"),
        ("Developer Experience And Tooling", "DEA"),
        ("Billing", "B"),
        ("2. Site Design", "SD"),
        ("Billing Engine (BIL)", "BIL"),
        ("frontend", "FE"),
    ],
)
def test_area_codes(name: str, code: str) -> None:
    assert spec.area_code(name) == code


def test_every_check_state(doc: spec.Spec) -> None:
    items = by_id(doc)
    assert items["SD.1"].state == "pending" and items["SD.1"].status == "pending"
    assert items["SD.2"].state == "done" and items["SD.2"].status == "done"
    assert items["SD.3"].state == "done"
    assert items["SD.4"].state == "in_progress" and items["SD.4"].status == "pending"
    assert items["SD.5"].state == "skipped" and items["SD.5"].status == "cancelled"
    assert items["SD.6"].state == "blocked" and items["SD.6"].held and items["SD.6"].status == "pending"
    logo = next(i for i in doc.items if i.title == "Logo approved")
    assert logo.state == "done"


def test_priorities_tags_and_descriptions(doc: spec.Spec) -> None:
    items = by_id(doc)
    assert items["SD.1"].priority == 1
    assert items["SD.6"].priority == 0
    assert items["SD.2"].priority is None  # not given: the importer keeps/defaults it
    assert items["SD.1"].tags == ["ui", "web"]
    assert items["SD.6"].tags == ["blocked-on-vendor"]
    assert items["SD.1"].title == "Landing page"
    assert items["SD.3"].description == "chosen"
    assert items["BE.1"].tags == ["api"] and items["BE.1"].priority == 0


def test_nested_items_and_metadata_blocks_keep_their_check_marks(doc: spec.Spec) -> None:
    desc = by_id(doc)["SD.1"].description
    assert desc.splitlines() == [
        "hero, nav and footer",
        "",
        "> As a visitor I want to see what the shop sells at a glance.",
        "**Key requirements:**",
        "- [x] hero image",
        "- [ ] nav with search",
        "  - [ ] search suggestions",
        "**Files to change:**",
        "- site/index.html",
        "**Testing:**",
        "- screenshot test",
    ]
    # the sub-items are not tasks of their own
    assert not any(i.title in ("hero image", "nav with search", "search suggestions") for i in doc.items)


def test_missing_ids_get_the_next_free_number_in_their_area(doc: spec.Spec) -> None:
    items = by_id(doc)
    # explicit SD ids: 1..6 and 20 → the id-less items continue after the highest
    assert items["SD.21"].title == "Cart drawer"
    assert items["SD.23"].title == "Logo approved"
    assert items["BE.2"].title == "Payments"
    assert items["DM.8"].title == "plain checklist line without bold"
    assert items["DM.8"].tags == ["db"]
    assert not items["SD.21"].explicit_id


def test_duplicate_id_keeps_the_first_and_warns(doc: spec.Spec) -> None:
    items = by_id(doc)
    assert items["SD.1"].title == "Landing page"
    assert items["SD.22"].title == "Duplicate of the landing page"
    assert len(doc.warnings) == 1
    assert "SD.1 is already used on line 9" in doc.warnings[0] and "SD.22" in doc.warnings[0]


def test_deeper_headings_are_not_areas_and_fences_are_ignored(doc: spec.Spec) -> None:
    items = by_id(doc)
    assert items["SD.20"].area == "SD"  # `### Phase 2` does not start an area
    assert "SD.99" not in items
    assert "Not An Area" not in doc.areas.values()
    assert all("fence" not in i.description for i in doc.items)


def test_unreadable_lines_are_reported_with_line_numbers(doc: spec.Spec) -> None:
    lines = SPEC.splitlines()
    problems = {p.line: p for p in doc.problems}
    assert len(problems) == 3
    unknown = next(p for p in doc.problems if "check mark" in p.reason)
    assert lines[unknown.line - 1] == "- [?] unreadable check mark"
    bad_priority = next(p for p in doc.problems if "P9" in p.reason)
    assert lines[bad_priority.line - 1].startswith("- [ ] [P9]")
    assert by_id(doc)["DM.7"].priority is None  # still imported, with the default priority
    empty = next(p for p in doc.problems if "no title" in p.reason)
    assert lines[empty.line - 1] == "- [ ]"


def test_prose_after_a_blank_line_ends_an_item(doc: spec.Spec) -> None:
    assert "Closing prose" not in by_id(doc)["DM.7"].description


def test_ids_are_stable_when_parsed_twice() -> None:
    first = [(i.id, i.title) for i in spec.parse(SPEC).items]
    assert first == [(i.id, i.title) for i in spec.parse(SPEC).items]


def test_plain_markdown_checklist_without_areas() -> None:
    doc = spec.parse("- [ ] buy milk\n- [x] call Bob #phone\n* [ ] star bullets work too\n")
    assert [(i.id, i.title, i.state) for i in doc.items] == [
        ("T.1", "buy milk", "pending"),
        ("T.2", "call Bob", "done"),
        ("T.3", "star bullets work too", "pending"),
    ]
    assert doc.title is None and not doc.problems


def test_empty_and_garbage_input_never_raise() -> None:
    assert spec.parse("").items == []
    doc = spec.parse("```\n- [ ] never closed fence\n")
    assert doc.items == []
    doc = spec.parse("\ufeff# T\n\t- [ ] tab-indented is not top level\n- [x]\n")
    assert doc.items == [] and len(doc.problems) == 1


def test_parser_never_raises_and_ids_are_unique() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(
        [
            "# T",
            "## Site Design",
            "## Odd Area",
            "### Phase",
            "- [ ] **SD.1 a**",
            "- [x] b #t",
            "- [~] [P1] c",
            "- [!] **SD.2**",
            "- [-] d - e",
            "- ✓ f",
            "  - [ ] sub",
            "> story",
            "**Testing:**",
            "```",
            "",
            "prose",
            "- [?] g",
            "- [ ] [P7] h",
            "- [ ]",
            "* [X] **SD.1 dup**",
            "\t- [ ] tab",
        ]
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(pieces, st.text(max_size=30)), max_size=40))
    def check(lines: list[str]) -> None:
        doc = spec.parse("\n".join(lines))
        ids = [i.id for i in doc.items]
        assert len(ids) == len(set(ids))
        assert all(i.title and i.priority in (None, 0, 1, 2, 3, 4) for i in doc.items)
        assert spec.parse("\n".join(lines)).items == doc.items  # deterministic: a re-import matches

    check()
