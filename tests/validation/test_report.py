"""`genesis report RUN`: one self-contained HTML file, opened in a real headless browser (Debian's
chromium, installed by scripts/ensure-package.sh): every plot rendered, no JavaScript error, and
the figures and tables say what the run's files hold."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.optimizer.test_optimizer import ROOT
from tests.runs import promote

FIGURES = 6  # history, importances, parameters, and equity/drawdown on the explore window and the 2 validation windows


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found: CI must run the browser tests (scripts/ensure-package.sh installs it)")
        pytest.skip("no chromium on this machine; run scripts/ensure-package.sh (see the Makefile)")
    return found


def _render(page: Path) -> tuple[str, list[str]]:
    """The page's DOM once its scripts ran, and what its console said."""
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                           "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.fixture(scope="module")
def report(validated_run: Path, tmp_path_factory) -> tuple[Path, Path]:
    run_dir = tmp_path_factory.mktemp("report") / "results" / "runs" / "t"
    shutil.copytree(validated_run, run_dir)
    assert promote(run_dir).promoted  # the champion is drawn beside the candidates
    out = run_dir.parent.parent.parent / "report.html"
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "report", str(run_dir), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"report written to {out}" in proc.stdout
    return out, run_dir


@pytest.fixture(scope="module")
def rendered(report) -> tuple[str, list[str]]:
    return _render(report[0])


def test_the_report_is_self_contained_and_every_plot_renders_without_a_javascript_error(report, rendered):
    page, _ = report
    text = page.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # no CDN: the JavaScript is in the file
    assert text.count("plotly.js v") == 1  # Plotly's bundle, embedded once
    dom, console = rendered
    figures = re.split(r'id="figure-(\d+)"', dom)[1:]
    assert len(figures) == 2 * FIGURES
    for number, body in zip(figures[::2], figures[1::2], strict=True):
        assert 'class="main-svg"' in body, f"figure {number} did not render"
    errors = [line for line in console if "WebGL" not in line and "GL Driver" not in line]  # headless GPU notes
    assert not errors, errors


def test_the_report_says_what_the_run_files_hold(report, rendered):
    _, run_dir = report
    dom, _ = rendered
    with open(run_dir / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    plotted = [r for r in rows if r["state"] == "COMPLETE" and r["production_score"]]
    history = re.split(r'id="figure-\d+"', dom)[1]
    assert history.count('class="point"') == len(plotted)  # one marker per scored trial
    run = json.loads((run_dir / "run.json").read_text())
    best = run["best_trial"]
    assert f"#{best['number']}, production score {best['production_score']:.4f}" in dom
    validation = json.loads((run_dir / "validation.json").read_text())
    for candidate in validation["candidates"]:
        assert f"<td>{candidate['rank']}</td><td>{candidate['trial']}</td>" in dom
    dsr = validation["overfitting"]["deflated_sharpe"]
    assert f"deflated Sharpe ratio of trial {dsr['trial']}: {dsr['dsr']:.3f}" in dom
    assert f"probability of backtest overfitting: {validation['overfitting']['pbo']['pbo']:.3f}" in dom
    champion = json.loads((run_dir.parent.parent / "champions" / "BTCUSD_1h.json").read_text())
    assert dom.count(f"champion {champion['config_fingerprint'][:8]}") >= 3  # a curve in every window's legend
