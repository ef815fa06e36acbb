"""One objective scale per Optuna study: phase 1 (feasibility) chooses its points in a companion
study, the study itself only ever holds production scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import optuna

from genesis_core.optimizer import open_storage
from genesis_core.optimizer._samplers import FEASIBILITY_SUFFIX, PhasedSampler
from tests.optimizer.test_optimizer import write_config
from tests.runs import optimize

PHASE1, TOTAL = 15, 45


def feasibility(x: float) -> float:
    return 1.0 - abs(x - 0.9)  # in [0.1, 1]: best at 0.9


def production(x: float) -> float:
    return -10.0 - 50.0 * abs(x - 0.1)  # always below any feasibility value: best at 0.1


def _tpe() -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=1, n_startup_trials=5)


def _phase2_points(study: optuna.Study) -> np.ndarray:
    return np.array([t.params["x"] for t in study.trials if t.number >= PHASE1])


def test_tpe_in_phase_2_no_longer_prefers_the_phase_1_points():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    # before: one study told feasibility in phase 1, production after; the phase-1 values are the
    # best the study has ever seen, so TPE goes on sampling where feasibility was high
    mixed = optuna.create_study(direction="maximize", sampler=_tpe())
    for i in range(TOTAL):
        trial = mixed.ask(space)
        x = trial.params["x"]
        mixed.tell(trial, feasibility(x) if i < PHASE1 else production(x))
    # now: the study is told production scores only; phase 1 chose its points in the companion study
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize",
                                sampler=PhasedSampler(_tpe(), _tpe(), space, PHASE1))
    for _ in range(TOTAL):
        trial = study.ask(space)
        x = trial.params["x"]
        trial.set_user_attr("feasibility_score", feasibility(x))
        study.tell(trial, production(x))
    before, after = _phase2_points(mixed), _phase2_points(study)
    assert np.median(np.abs(before - 0.9)) < 0.15  # the mixed-scale study kept to the phase-1 optimum
    assert np.median(np.abs(after - 0.1)) < 0.15  # the one-scale study moved to the production optimum
    assert [t.value for t in study.trials] == [production(t.params["x"]) for t in study.trials]
    companion = optuna.load_study(study_name="s" + FEASIBILITY_SUFFIX, storage=storage)
    assert [t.params for t in companion.trials] == [t.params for t in study.trials[:PHASE1]]
    assert [t.value for t in companion.trials] == [feasibility(t.params["x"]) for t in companion.trials]
    phase1 = np.array([t.params["x"] for t in study.trials[:PHASE1]])
    assert np.median(np.abs(phase1[5:] - 0.9)) < 0.2  # phase 1 still searched for feasibility


def test_a_run_holds_production_scores_and_its_feasibility_companion_the_phase_1_ones(tmp_path):
    summary = optimize(write_config(tmp_path))  # 12 trials, 4 of phase 1
    with open(Path(summary["run_dir"]) / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert done and all(float(r["objective"]) == float(r["production_score"]) for r in done)
    assert any(float(r["feasibility_score"]) != float(r["production_score"]) for r in done if r["phase"] == "1")
    storage = open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}")
    companion = optuna.load_study(study_name="t" + FEASIBILITY_SUFFIX, storage=storage)
    phase1 = {int(r["number"]): r for r in rows if r["phase"] == "1"}
    assert len(companion.trials) == len(phase1) == 4
    for told, row in zip(companion.trials, phase1.values(), strict=True):
        assert told.value == float(row["feasibility_score"])
