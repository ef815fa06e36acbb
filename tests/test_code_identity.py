"""Results are keyed by the code that produced them, the user's own modules included: an edit to a
user's strategy or feature is re-evaluated, never answered from a cache or resumed into."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from genesis_core.features import register_feature
from genesis_core.features._store import _feature_code
from genesis_core.fingerprint import code_version
from genesis_core.plugins import _user_root, code_fingerprint, plugin_source
from genesis_core.strategy import get_strategy
from tests.optimizer.test_optimizer import ROOT
from tests.scoring_functions import return_over_drawdown

STRATEGY = '''
from dataclasses import replace

import numpy as np

from genesis_core.strategy import Decisions, StrategyTrace
from genesis_core.strategy.sma_cross import SmaCrossParams, SmaCrossStrategy

from userplug import feature  # noqa: F401 - registers "wma"

SIZE = {size}


class Mine(SmaCrossStrategy):
    """The SMA cross, with the fast average a user feature and a fixed size."""

    name = "mine"
    Params = SmaCrossParams

    def decide(self, features, params, start):
        fast, slow = features.get(f"wma:{{params.fast}}"), features.get(f"sma:{{params.slow}}")
        prev_f, prev_s = np.r_[np.nan, fast[:-1]], np.r_[np.nan, slow[:-1]]
        acted = np.arange(len(fast)) >= start
        side = np.where((prev_f < prev_s) & (fast > slow) & acted, 1,
                        np.where((prev_f > prev_s) & (fast < slow) & acted, -1, 0)).astype(np.int8)
        n = int((side != 0).sum())
        return replace(Decisions.empty(len(fast), StrategyTrace(int(acted.sum()), 0, n, n, {{}})),
                       side=side, size=np.where(side != 0, SIZE, 0.0))
'''

FEATURE = '''
import numpy as np

from genesis_core.features import register_feature


@register_feature("wma", "wma:bars", lambda base_seconds, bars: bars - 1)
def wma(store, bars):
    """A weighted moving average of the close (weights {weights})."""
    close = store.candles.close
    weights = {weights}
    out = np.full(len(close), np.nan)
    out[bars - 1:] = np.convolve(close, weights[::-1] / weights.sum(), mode="valid")
    return out
'''


def _package(root: Path, size: float, weights: str = "np.arange(1.0, bars + 1.0)") -> None:
    pkg = root / "userplug"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "strategy.py").write_text(STRATEGY.format(size=size))
    (pkg / "feature.py").write_text(FEATURE.format(weights=weights))


def _genesis(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def _study(root: Path, name: str, trials: int, strategy: str = "userplug.strategy:Mine") -> Path:
    (root / "base.yaml").write_text(yaml.safe_dump({"strategy": strategy, "params": {"fast": 10, "slow": 30}}))
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "meta": {"base_config": str(root / "base.yaml"), "data": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                 "sample_start": "2022-01-01", "sample_end": "2022-06-30", "study_name": name,
                 "results_dir": str(root / "results"), "sampler": {"name": "tpe", "kwargs": {"seed": 3}},
                 "stop": {"max_trials": trials}, "skip_champion_merge": True},
        "parameters": {"fast": {"type": "int", "low": 5, "high": 8}, "slow": {"type": "int", "low": 20, "high": 22}},
        "scoring": {"phase1": {"trials": 2}}}))
    return path


def test_an_edited_user_strategy_blocks_resume_and_is_never_answered_from_the_cache(tmp_path):
    _package(tmp_path, 0.5)
    first = _genesis(tmp_path, "optimize", str(_study(tmp_path, "a", 6)), "--skip-preflight", "--json")
    assert first.returncode == 0, first.stderr
    trials_a = json.loads((tmp_path / "results" / "runs" / "a" / "trials" / "000000.json").read_text())

    _package(tmp_path, 0.1)  # the user edits the size of their strategy
    resumed = _genesis(tmp_path, "optimize", str(_study(tmp_path, "a", 8)), "--skip-preflight")
    assert resumed.returncode == 2 and "code:" in resumed.stderr, resumed.stderr  # the study's code changed
    fresh = _genesis(tmp_path, "optimize", str(_study(tmp_path, "b", 6)), "--skip-preflight", "--json")
    assert fresh.returncode == 0, fresh.stderr
    summary = json.loads(fresh.stdout)
    assert summary["explore"]["cache"]["reused_from_other_studies"] == 0  # nothing measured with the old code
    trials_b = json.loads((tmp_path / "results" / "runs" / "b" / "trials" / "000000.json").read_text())
    assert trials_b["params"] == trials_a["params"]  # the same seeded first point ...
    assert trials_b["metrics"]["total_return"] != trials_a["metrics"]["total_return"]  # ... measured again
    assert trials_b["code_version"] != trials_a["code_version"] != code_version()


def test_an_edit_to_a_module_a_one_file_strategy_imports_blocks_resume_and_is_never_answered_from_the_cache(tmp_path):
    """A strategy in ``mine.py`` that takes its size from ``sizes.py`` beside it: only mine.py was
    hashed, so after an edit to sizes.py the study resumed, mixing trials of two sizes under one
    code, and a new study's duplicates were answered from the cache with the old size's scores."""
    strategy = STRATEGY.replace("from userplug import feature  # noqa: F401 - registers \"wma\"", "from sizes import SIZE")
    strategy = strategy.replace("SIZE = {size}", "").replace('f"wma:{{params.fast}}"', 'f"sma:{{params.fast}}"')
    (tmp_path / "mine.py").write_text(strategy.format())

    def study(name: str, trials: int, size: float) -> subprocess.CompletedProcess:
        (tmp_path / "sizes.py").write_text(f"SIZE = {size}\n")
        return _genesis(tmp_path, "optimize", str(_study(tmp_path, name, trials, "mine:Mine")), "--skip-preflight", "--json")

    assert study("a", 6, 0.5).returncode == 0
    trial_a = json.loads((tmp_path / "results" / "runs" / "a" / "trials" / "000000.json").read_text())
    resumed = study("a", 8, 0.1)  # the user edits the size their strategy imports
    assert resumed.returncode == 2 and "code:" in resumed.stderr, resumed.stderr
    fresh = study("b", 6, 0.1)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["explore"]["cache"]["reused_from_other_studies"] == 0
    trial_b = json.loads((tmp_path / "results" / "runs" / "b" / "trials" / "000000.json").read_text())
    assert trial_b["params"] == trial_a["params"] and trial_b["code_version"] != trial_a["code_version"]
    assert trial_b["metrics"]["total_fees"] < trial_a["metrics"]["total_fees"] / 2  # traded at a fifth the size


def test_a_strategy_edited_under_a_long_lived_process_is_refused_until_reloaded_then_is_other_code(tmp_path, monkeypatch):
    """A user's source was hashed once a process. After an edit, a notebook that reloaded the module
    resumed its study and recorded the new code's trials as the old code's; one that did not, or an
    MCP server, resumed running the old code, while a process it started for a trial imported the
    new. Now a run refuses an edit its process does not run, naming the file; after a reload the
    study is the new code's, as after an edit between two commands: resume is blocked, and a new
    study measures every trial again."""
    import importlib

    import pytest

    from genesis_core.errors import ConfigError
    from genesis_core.optimizer import ResumeBlocked
    from tests.runs import optimize

    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, 0.5)
    try:
        assert optimize(_study(tmp_path, "a", 6))["cache"]["total_trials"] == 6
        trial_a = json.loads((tmp_path / "results" / "runs" / "a" / "trials" / "000000.json").read_text())
        _package(tmp_path, 0.1)  # the user edits the size of their strategy
        with pytest.raises(ConfigError, match=f"^{tmp_path / 'userplug' / 'strategy.py'} was edited after this process "
                                              "imported it: "):
            optimize(_study(tmp_path, "a", 8))
        importlib.reload(sys.modules["userplug.strategy"])  # as IPython's %autoreload does
        with pytest.raises(ResumeBlocked, match="code: the code changed"):
            optimize(_study(tmp_path, "a", 8))
        fresh = optimize(_study(tmp_path, "b", 6))
        assert fresh["cache"]["reused_from_other_studies"] == 0
        trial_b = json.loads((tmp_path / "results" / "runs" / "b" / "trials" / "000000.json").read_text())
        assert trial_b["params"] == trial_a["params"] and trial_b["code_version"] != trial_a["code_version"]
        assert trial_b["metrics"]["total_fees"] < trial_a["metrics"]["total_fees"] / 2  # traded at a fifth the size
    finally:
        for name in [n for n in sys.modules if n.partition(".")[0] == "userplug"]:
            del sys.modules[name]


def test_genesis_core_s_own_source_changed_under_a_process_that_lives_on_stops_its_next_run(tmp_path):
    """Genesis-Core's source is hashed once a process: upgraded or edited under a running MCP server
    or notebook, the next run signed its study with the old hash while the processes it starts for
    trials imported the new code. Now the run stops first, saying to restart. (On a copy of the
    package: the one installed here is shared with the tests running beside this one.)"""
    import shutil

    copy = tmp_path / "src" / "genesis_core"
    shutil.copytree(ROOT / "src" / "genesis_core", copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = _study(tmp_path, "a", 3, strategy="sma_cross")
    script = f"""
import genesis_core, pathlib
from genesis_core.study import load_study_config
assert genesis_core.__file__ == {str(copy / "__init__.py")!r}, genesis_core.__file__
cfg = load_study_config({str(path)!r})
cfg.spec()
edited = pathlib.Path(genesis_core.__file__).parent / "metrics" / "__init__.py"
edited.write_text(edited.read_text() + "# an upgrade")
try:
    cfg.spec()
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(copy.parent)}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout == (
        f"ConfigError Genesis-Core's source in {copy} changed after this process imported it (an upgrade, an edit): this "
        "process would run the code as it was, and a process it starts the code on disk, with no telling their results "
        "apart. Restart this process (an MCP server, a notebook's kernel)\n"), run.stdout + run.stderr


def test_an_edited_user_feature_is_computed_again_not_read_from_the_disk_cache(tmp_path):
    _package(tmp_path, 0.5)
    (tmp_path / "bt.yaml").write_text(yaml.safe_dump({
        "strategy": "userplug.strategy:Mine", "params": {"fast": 10, "slow": 30},
        "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"), "start": "2022-01-01", "end": "2022-06-30"}}))

    def trades(*extra: str) -> int:
        proc = _genesis(tmp_path, "backtest", "-c", "bt.yaml", "--json", "--out", str(tmp_path / "r.json"), *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["metrics"]["num_trades"]

    before = trades()
    assert list((tmp_path / ".cache").rglob("wma_10-*.f8"))  # the feature went to the disk cache
    _package(tmp_path, 0.5, weights="np.ones(bars)")  # the user edits the feature: now a plain average
    cached = trades()
    subprocess.run(["rm", "-rf", str(tmp_path / ".cache")], check=True)
    assert cached == trades() != before  # with the cache present: what a fresh computation gives


def test_built_in_code_is_the_package_version_and_user_code_its_source():
    assert code_fingerprint(type(get_strategy("reference"))) == code_version()
    assert plugin_source(type(get_strategy("sma_cross"))) is None
    top, digest = plugin_source(return_over_drawdown)
    assert top == "tests" and len(digest) == 64
    assert code_fingerprint(return_over_drawdown) not in (code_version(), digest)
    # what is followed from a plugin's imports: the user's code, not the interpreter's, an installed package's or ours
    assert _user_root("tests") == str(ROOT / "tests") and _user_root("userplug_absent") is None
    assert [_user_root(name) for name in ("json", "numpy", "optuna", "genesis_core")] == [None] * 4

    @register_feature("code_identity_probe", "code_identity_probe", lambda base_seconds: 0)
    def probe(store):
        return store.candles.close

    assert _feature_code("rsi") == code_version() and _feature_code("code_identity_probe") != code_version()
