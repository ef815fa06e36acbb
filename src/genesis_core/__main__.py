"""``python -m genesis_core`` is the ``genesis`` command."""

from genesis_core.cli import app

app(prog_name="genesis")
