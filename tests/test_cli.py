"""`sail`: the top-level help lists every subcommand with the options it really takes, as the README does."""

import re
from pathlib import Path

import pytest

from jobs import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_lines() -> list[str]:
    """The help's `sail ...` lines (a continuation line joins the one before it)."""
    lines: list[str] = []
    for line in cli.__doc__.splitlines():
        if line.startswith("sail "):
            lines.append(line)
        elif line.startswith(" ") and lines and line.strip().startswith("["):
            lines[-1] += " " + line.strip()
    return lines


def test_help_lists_every_command_once(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[1] for line in _usage_lines()]
    assert sorted(names) == sorted(cli.COMMANDS)
    for name in cli.COMMANDS:
        assert f"\nsail {name} " in out


def test_unknown_command_is_an_error_with_the_help(capsys):
    assert cli.main(["nonsense"]) == 2
    captured = capsys.readouterr()
    assert "unknown command 'nonsense'" in captured.err and "sail train-ranker" in captured.out


def test_readme_cli_block_is_the_help():
    text = README.read_text()
    block = text[text.index("## CLI") :]
    block = block[block.index("```\n") + 4 : block.index("\n```", block.index("```\n") + 4)]
    assert block.splitlines() == [line for line in cli.__doc__.splitlines() if line.startswith(("sail ", "    "))]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_in_the_help_is_one_the_command_takes(name, capsys):
    argv = ["report", "compare", "-h"] if name == "report" else [name, "-h"]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    options = capsys.readouterr().out
    assert f"usage: sail {' '.join(argv[:-1])}" in options
    line = next(line for line in _usage_lines() if line.split()[1] == name)
    for flag in re.findall(r"--[a-z][a-z0-9-]*", line):
        assert re.search(rf"{flag}\b", options), f"`sail {name}` help names {flag}, which the command does not take"
