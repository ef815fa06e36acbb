"""Every command's help, as a user at an 80-column terminal reads it."""

from __future__ import annotations

import itertools
from typing import Any

import typer
from typer.testing import CliRunner

from genesis_core.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", {}).values()  # a group's (typer's own click, not click's classes)
    return [path, *(p for sub in subcommands for p in _commands(sub, (*path, sub.name or "")))]


def test_every_command_s_help_fits_80_columns_with_no_option_or_default_cut_short():
    """Each flag is one option (``--force-resume``, not ``--force-resume/--no-force-resume``): the
    pairs took the width of ``genesis optimize --help`` and ``genesis sweep --help`` and cut names
    and defaults to ``--no-backfill-sign…``. A command that takes a config file takes it as its
    argument (``genesis backtest CONFIG``, as ``genesis optimize CONFIG``)."""
    paths = _commands(typer.main.get_command(app))
    assert len(paths) > 20 and ("sweep",) in paths and ("data", "download") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": None})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert "…" not in text and "--no-" not in text, (path, text)
        assert max(len(line) for line in text.splitlines()) <= 80, (path, text)
    assert "backtest [OPTIONS] [CONFIG]" in CliRunner().invoke(app, ["backtest", "--help"], env={"COLUMNS": "80"}).output


def _panel_entries(text: str, title: str) -> dict[str, list[str]]:
    """The lines of each entry of a help panel (``Commands``), by name, as drawn."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"╭─ {title} "))
    entries: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if line.startswith("╰"):
            break
        cells = line.strip("│").rstrip()
        name, _, help_text = cells.strip().partition(" ")
        if cells[1] != " ":
            entries[name] = [help_text.strip()]
        else:
            entries[list(entries)[-1]].append(cells.strip())
    return entries


def test_a_command_s_summary_is_flowed_to_the_width_and_drawn_as_written():
    """A docstring's line breaks are not the help's: ``genesis data --help`` cut its download
    entry after "so an interrupted" with half a line to spare. ``[fleet]`` was read as markup and
    dropped, so ``genesis storage --help`` told the user to ``pip install 'genesis-core'``;
    ``<results-dir>`` must survive the rendering too."""
    for group in ((), ("data",), ("storage",), ("champion",), ("model",), ("runs",)):
        text = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": None}).output
        entries = _panel_entries(text, "Commands")
        room = max(len(part) for parts in entries.values() for part in parts)  # the summaries' column
        for name, parts in entries.items():
            for line, following in itertools.pairwise(parts):
                assert len(line) + 1 + len(following.split()[0]) > room, (group, name, parts)
    storage = _words(CliRunner().invoke(app, ["storage", "--help"]).output)
    assert "(pip install 'genesis-core[fleet]')." in storage
    report = _words(CliRunner().invoke(app, ["report", "--help"]).output)
    assert "a study name under <results-dir>/runs;" in report
    assert "(default: <run folder>/report.html)." in report


def _words(text: str) -> str:
    """Help text with its panels' borders and line breaks taken out."""
    return " ".join(text.replace("│", " ").split())
