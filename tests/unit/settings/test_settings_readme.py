"""README.md's Settings table checked against paystream/settings.py, the one parser."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from paystream.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[3]
HEADING = "## Settings"
TEST = "tests/unit/settings/test_settings_readme.py"

# Variables the table may list although paystream/settings.py does not read them,
# each with the part of the repo that does. Empty while every knob of the product
# goes through the one parser; the stack's port variables have their own table.
READ_ELSEWHERE: dict[str, str] = {}


class _Recorder(Mapping[str, str]):
    """An empty environment that notes every name the parser looks up in it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __getitem__(self, name: str) -> str:
        self.names.append(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        # Listing the environment (say, every FRAUD_* present) would read names no
        # lookup shows, and this test would silently miss them.
        raise AssertionError(f"paystream/settings.py iterates the environment: {TEST} "
                             "finds the variables it reads by lookup only; teach it how")

    def __len__(self) -> int:
        return 0


def names_read() -> set[str]:
    """Every variable Settings.from_env looks up, as it runs (not as its source reads)."""
    env = _Recorder()
    Settings.from_env(env)
    return set(env.names)


def parse_table(text: str) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """The table under HEADING: {variable: (line number, default)}, and what is malformed.

    A row names one or more variables in backticks; its default cell gives one value in
    backticks per variable, in order (or one for all of them), or the word `empty`.
    """
    lines = text.splitlines()
    if HEADING not in lines:
        return {}, [f"README.md has no {HEADING!r} heading: the settings table lives under it"]
    table: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    index = lines.index(HEADING) + 1
    while index < len(lines) and not lines[index].startswith("|"):
        index += 1
    rows = []
    while index < len(lines) and lines[index].startswith("|"):
        rows.append((index + 1, lines[index]))
        index += 1
    for number, line in rows[2:]:  # past the header and its |---| line
        cells = line.strip().strip("|").split("|", 2)
        if len(cells) < 3:
            problems.append(f"README.md line {number}: expected | variable | default | what |")
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        cell = cells[1].strip()
        defaults = [""] if cell == "empty" else re.findall(r"`([^`]*)`", cell)
        if not names:
            problems.append(f"README.md line {number}: name the variable in backticks")
            continue
        if not defaults:
            problems.append(f"README.md line {number}: write the default in backticks, "
                            "or the word empty")
            continue
        if len(defaults) not in (1, len(names)):
            problems.append(f"README.md line {number}: {len(names)} variables but "
                            f"{len(defaults)} defaults; give one per variable, in order, "
                            "or one for all")
            continue
        if len(defaults) == 1:
            defaults *= len(names)
        for name, default in zip(names, defaults, strict=True):
            if name in table:
                problems.append(f"README.md line {number}: {name} is already tabled at line "
                                f"{table[name][0]}; keep one row")
            table[name] = (number, default)
    return table, problems


def readme_table() -> tuple[dict[str, tuple[int, str]], list[str]]:
    return parse_table((ROOT / "README.md").read_text())


def as_cell(value: object) -> str:
    """A value as the table's default column writes it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Mapping):
        value = ",".join(f"{key}={item}" for key, item in value.items())
    elif isinstance(value, frozenset):
        value = ",".join(sorted(value))
    elif isinstance(value, tuple):
        value = ",".join(str(item) for item in value)
    text = str(value)
    return f"`{text}`" if text else "empty"


def differences(expected: Any, got: Any, path: str = "Settings") -> list[tuple[str, object]]:
    """(field, expected value) for each field of two settings that differ, nested ones too."""
    found: list[tuple[str, object]] = []
    for f in dataclasses.fields(expected):
        want, have = getattr(expected, f.name), getattr(got, f.name)
        if dataclasses.is_dataclass(want):
            found += differences(want, have, f"{path}.{f.name}")
        elif want != have:
            found.append((f"{path}.{f.name}", want))
    return found


def test_the_settings_table_parses() -> None:
    _, problems = readme_table()
    assert not problems, "\n".join(problems)


def test_every_variable_the_settings_read_is_tabled() -> None:
    table, _ = readme_table()
    missing = sorted(names_read() - table.keys())
    assert not missing, (
        f"README.md's Settings table lacks {', '.join(missing)}, which paystream/settings.py "
        "reads: add a row for each (| `NAME` | `its default` | what it does and why |)")


def test_the_table_lists_only_variables_the_settings_read() -> None:
    table, _ = readme_table()
    unknown = sorted(table.keys() - names_read() - READ_ELSEWHERE.keys())
    assert not unknown, "\n".join(
        f"README.md line {table[name][0]}: {name} is not read by paystream/settings.py; "
        f"remove it from the Settings table, or, if another part of the repo reads it, "
        f"add it to READ_ELSEWHERE in {TEST} with the reason" for name in unknown)


def test_each_tabled_default_is_the_codes() -> None:
    # Setting a variable to its tabled default must change nothing: this compares
    # through the code's own parsing (`60` and `60.0` alike, a `kafka://` prefix
    # dropped) without this test keeping a map of variables to fields.
    table, _ = readme_table()
    defaults = Settings.from_env({})
    problems = []
    for name in sorted(table.keys() & names_read()):
        number, tabled = table[name]
        try:
            given = Settings.from_env({name: tabled})
        except SettingsError as err:
            problems.append(f"README.md line {number}: {name}'s tabled default `{tabled}` is "
                            f"refused by paystream/settings.py ({err}); table the code's default")
            continue
        changed = differences(defaults, given)
        if not changed and tabled == "":
            # Numbers read an empty value as unset, so `empty` passes above for any
            # of them: the field a text value lands in must really default to empty.
            try:
                changed = [(field, code) for field, code in
                           differences(defaults, Settings.from_env({name: "x"}))
                           if as_cell(code) != "empty"]
            except SettingsError as err:
                problems.append(f"README.md line {number}: {name} is tabled as empty, but "
                                f"it is not free text ({err}); table the code's default")
        for field, code in changed:
            problems.append(f"README.md line {number}: {name} is tabled with default "
                            f"{as_cell(tabled)}, but paystream/settings.py's default "
                            f"({field}) is {as_cell(code)}: write {as_cell(code)} in the "
                            "default column")
    assert not problems, "\n".join(problems)


def test_the_worker_readme_links_to_the_table_instead_of_copying_it() -> None:
    readme = (ROOT / "streams" / "README.md").read_text()
    read = names_read()
    copies = [
        f"streams/README.md line {number}: a table row for {name}; the README's Settings "
        "table is the only one, so delete the row and link to ../README.md#settings"
        for number, line in enumerate(readme.splitlines(), 1) if line.startswith("|")
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]) if name in read
    ]
    assert not copies, "\n".join(copies)
    assert "(../README.md#settings)" in readme, (
        "streams/README.md: link to the README's Settings table as (../README.md#settings)")
