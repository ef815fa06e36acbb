"""A module whose import is visible: importing it writes the file named by $GENESIS_IMPORT_MARKER,
so a test can tell whether a config made a server import a module of the config's choosing."""

import os
from pathlib import Path

if os.environ.get("GENESIS_IMPORT_MARKER"):
    Path(os.environ["GENESIS_IMPORT_MARKER"]).write_text("imported")

Anything = object()  # an attribute that is not a Strategy
