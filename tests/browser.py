"""A real headless browser for the HTML reports (Debian's chromium, installed by
scripts/ensure-package.sh), and the figures' data as the page holds it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found: CI must run the browser tests (scripts/ensure-package.sh installs it)")
        pytest.skip("no chromium on this machine; run scripts/ensure-package.sh (see the Makefile)")
    return found


def render(page: Path) -> tuple[str, list[str]]:
    """The page's DOM once its scripts ran, and the console's errors (headless GPU notes left out)."""
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                           "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, [line for line in console if "WebGL" not in line and "GL Driver" not in line]


def rendered_figures(dom: str) -> dict[str, str]:
    """Each figure's rendered DOM by its number; a figure that did not render has no SVG."""
    parts = re.split(r'id="figure-(\d+)"', dom)[1:]
    return dict(zip(parts[::2], parts[1::2], strict=True))


def figure_data(text: str, number: int) -> list[dict]:
    """The traces Plotly was given for figure ``number``, arrays decoded (Plotly stores float
    arrays as base64 ``bdata``)."""
    start = text.index("[", text.index(f'Plotly.newPlot(                        "figure-{number}"'))
    traces, _ = json.JSONDecoder().raw_decode(text, start)
    return [{k: _decoded(v) for k, v in t.items()} for t in traces]


def _decoded(value):
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return value
