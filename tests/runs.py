"""The file-to-result steps the CLI takes, for tests: load a study config from a file, then call
the typed API. Results come back as the JSON a user would see (``--json``), so tests read them
the way a user does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from genesis_core import optimizer
from genesis_core.champion import Decision
from genesis_core.records import RunFolder, TrialArtifact
from genesis_core.study import load_study_config
from genesis_core.validation import ValidationConfig
from genesis_core.workflow import promote_run, validate_run

ROOT = Path(__file__).resolve().parents[1]  # the project folder


def optimize(path: Path, options: optimizer.RunOptions | None = None, storage: str | None = None) -> dict[str, Any]:
    """`genesis optimize PATH --skip-preflight` without validation or promotion: the explore summary."""
    spec = load_study_config(path).spec(storage)
    return optimizer.optimize(spec, options or optimizer.RunOptions()).model_dump(mode="json")


def validate(run_dir: Path, validation: ValidationConfig | None = None) -> dict[str, Any]:
    """`genesis validate RUN`: the report."""
    return validate_run(RunFolder(run_dir), validation).model_dump(mode="json")


def promote(run_dir: Path, trial: int | None = None, min_improvement: float | None = None) -> Decision:
    """`genesis champion promote RUN`."""
    return promote_run(RunFolder(run_dir), trial, min_improvement)


def genesis(*args: str) -> SimpleNamespace:
    """`genesis ARGS` run in this process, as the command line runs it (in-process keeps tests fast):
    returncode, stdout, stderr."""
    from typer.testing import CliRunner

    from genesis_core.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def genesis_apart(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`genesis ARGS` in a process of its own (in the project folder, or ``cwd``): a crash, an exit or a
    signal ends that one, not the tests'."""
    return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


_KILLED_AFTER = """
import importlib, os, signal, sys
from genesis_core.cli import app

target, calls, sig, args = sys.argv[1], int(sys.argv[2]), signal.Signals[sys.argv[3]], sys.argv[4:]
module, _, path = target.partition(":")
*owners, name = path.split(".")
owner = importlib.import_module(module)
for part in owners:
    owner = getattr(owner, part)
real, done, command = getattr(owner, name), [], os.getpid()

def then_killed(*a, **k):
    out = real(*a, **k)
    done.append(1)
    if len(done) == calls:
        os.kill(command, sig)  # from a child it started (validation's backtests run in one) too
    return out

setattr(owner, name, then_killed)
app(args, prog_name="genesis")
"""


def genesis_killed_after(target: str, calls: int, *args: str, sig: signal.Signals = signal.SIGKILL) -> subprocess.CompletedProcess[str]:
    """`genesis ARGS` in a process of its own that is sent SIGKILL (or ``sig``) right after its
    ``calls``-th call of ``target`` (``module:Class.function`` or ``module:function``) returns, in
    it or in a child it started: a kill at a chosen step."""
    return subprocess.run([sys.executable, "-c", _KILLED_AFTER, target, str(calls), sig.name, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def ctrl_c_until_it_ends(proc: subprocess.Popen[str], group: bool = True, limit: int = 6000) -> int:
    """An impatient user: SIGINT every 20 ms from now until ``proc`` ends (to its whole process group
    when ``group``, as a terminal sends it), at most ``limit`` times; returns the presses."""
    presses = 0
    while proc.poll() is None and presses < limit:
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        presses += 1
        time.sleep(0.02)
    return presses


def artifacts(folder: RunFolder) -> list[TrialArtifact]:
    """The artifacts of the run's evaluated trials (``RunFolder.evaluated_numbers``), in order."""
    return [folder.read_trial(n) for n in folder.evaluated_numbers()]
