"""Every command's help, as a user at an 80-column terminal reads it."""

from __future__ import annotations

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
