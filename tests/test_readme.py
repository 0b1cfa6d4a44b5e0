"""The README is the user's map of `configs/`: its tables name every config group, option and recipe there, no other."""

from __future__ import annotations

import re
from pathlib import Path

from attnfit.cli import CONFIG_DIR

README = Path(CONFIG_DIR).parent / "README.md"
INTERNAL = {"hydra", "paths"}  # groups a user does not choose between


def readme_groups() -> dict[str, set[str]]:
    """``| `group` | `a`, `b` | … |`` rows of the config-group table -> {group: {a, b}}."""
    rows = re.findall(r"^\| `(\w+)` \| ((?:`[\w-]+`(?:, )?)+) \|", README.read_text(), flags=re.MULTILINE)
    return {group: set(re.findall(r"`([\w-]+)`", options)) for group, options in rows}


def test_the_readme_names_every_config_group_and_option() -> None:
    on_disk = {
        p.name: {f.stem for f in p.glob("*.yaml")}
        for p in Path(CONFIG_DIR).iterdir()
        if p.is_dir() and p.name not in INTERNAL
    }
    documented = readme_groups()
    problems = [
        f"{group}: README lacks {sorted(on_disk.get(group, set()) - documented.get(group, set()))}, "
        f"names absent {sorted(documented.get(group, set()) - on_disk.get(group, set()))}"
        for group in sorted(on_disk.keys() | documented.keys())
        if on_disk.get(group) != documented.get(group)
    ]
    assert problems == []


def test_the_readme_gives_every_experiment_a_command() -> None:
    """The recipes table: one row per file of ``configs/experiment/``, whose command names that experiment."""
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", README.read_text(), flags=re.MULTILINE)
    commands = {name: command for name, command in rows if "attnfit-" in command}
    experiments = {f.stem for f in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    assert set(commands) == experiments
    assert [name for name, command in commands.items() if f"experiment={name}" not in command] == []
