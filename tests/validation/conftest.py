"""A small explore -> validate run on the bundled data, shared by the validation and champion tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.optimizer.test_optimizer import write_config

PARAMETERS = {
    "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 48]},
    "exits.stop_loss_atr": {"type": "categorical", "choices": [1.5, 2.5]},
    "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "categorical", "choices": [0.53, 0.55]},
}
# Explore 2022-03..05 (see write_config); validate on the two following quarters. A 20% drawdown
# limit is what the explore favourites break out of sample on this data.
VALIDATION = {
    "enabled": True, "top_n": 4,
    "windows": [{"start": "2022-06-01", "end": "2022-08-31"}, {"start": "2022-09-01", "end": "2022-11-30"}],
    "constraints": {"min_trades": 5, "min_profit_factor": 0.0, "max_drawdown": 0.2},
}


# Trial 233 of the bundled reference run (300 trials, seed 42): 2022 explored, it made money in
# 2023-H1 with 43 trades, all of it on the one entered on 2023-03-22.
ONE_TRADE = {
    "exits.exit_conf_threshold": 0.46, "exits.max_bars_held": 89, "exits.stop_loss_atr": 2.75, "exits.take_profit_atr": 5.5,
    "gates.cooldown_bars": 11, "gates.htf.enabled": False, "risk.risk_map.0.1": 0.5, "thresholds.min_edge": 0.01,
    "thresholds.signal_adaptation.zones.high.entry_conf_overall": 0.595,
    "thresholds.signal_adaptation.zones.low.entry_conf_overall": 0.545,
    "thresholds.signal_adaptation.zones.mid.entry_conf_overall": 0.615,
}
FIRST_HALF_2023 = {"start": "2023-01-01", "end": "2023-06-30"}


# The gates on money and overfitting are off here (tests of the other gates promote a 16-trial search's
# favourite, which they rightly refuse); tests/validation/test_champion.py switches each on.
GATES_OFF = {"min_validation_return": None, "min_dsr": None, "max_pbo": None}


def validated_config(tmp_path: Path, name: str = "opt.yaml", **changes) -> Path:
    # seed 3: the 16 trials reach two configs that pass validation (tests rank and promote both)
    meta = {"stop": {"max_trials": 16}, "sampler": {"name": "tpe", "kwargs": {"seed": 3, "n_startup_trials": 5}}}
    sections = {"parameters": PARAMETERS, "validation": VALIDATION, **changes, "meta": {**meta, **changes.get("meta", {})},
                "promotion": {**GATES_OFF, **changes.get("promotion", {})}}
    return write_config(tmp_path, name, **sections)


@pytest.fixture(scope="session")
def validated_run(tmp_path_factory) -> Path:
    """A finished run (explore + validation.json), no champion; copy it before promoting."""
    from tests.runs import optimize, validate

    tmp = tmp_path_factory.mktemp("validated")
    run_dir = Path(optimize(validated_config(tmp))["run_dir"])
    validate(run_dir)
    return run_dir


@pytest.fixture
def fresh_run(validated_run: Path, tmp_path: Path) -> Path:
    """The shared run copied into an empty results folder of this test's own."""
    copy = tmp_path / "results" / "runs" / validated_run.name
    shutil.copytree(validated_run, copy)
    return copy
