"""Many workers on PostgreSQL: one study, one cache, no parameter set evaluated twice."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna

from genesis_core.optimizer import RunOptions, open_storage
from tests.optimizer.test_optimizer import ROOT, _trials, write_config
from tests.runs import optimize

SMALL_SPACE = {
    "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 36]},
    "exits.stop_loss_atr": {"type": "categorical", "choices": [1.5, 2.5]},
}


def test_worker_processes_share_study_and_cache_on_postgresql(tmp_path, postgres_url):
    path = write_config(tmp_path, meta={"stop": {"max_trials": 20}}, parameters=SMALL_SPACE)
    summary = optimize(path, RunOptions(workers=3), storage=postgres_url)
    rows = _trials(summary)
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]) == 20 and summary["session"]["failed_workers"] == []
    assert all("taken by other workers" in r["fail_reason"] for r in rows if r["state"] == "FAIL")
    evaluated = [r["config_fingerprint"] for r in rows if r["cached"] == "False"]
    assert len(evaluated) == len(set(evaluated)) <= 6  # a 3 x 2 space: at most six backtests in all
    for r in rows:
        if r["cached"] == "True":
            orig = next(o for o in rows if o["number"] == r["cache_reused_from"])
            assert r["score_phase2"] == orig["score_phase2"]
    assert len(optuna.load_study(study_name="t", storage=open_storage(postgres_url)).trials) == len(rows)


def test_two_machines_join_one_study(tmp_path, postgres_url):
    """Two independent `genesis optimize` processes (as on two machines) on the same URL and study."""
    path = write_config(tmp_path, meta={"stop": {"max_trials": 30}}, parameters=SMALL_SPACE)
    cmd = [sys.executable, "-m", "genesis_core", "optimize", str(path), "--storage", postgres_url, "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    summaries = [json.loads(o[0]) for o in outs]
    study = optuna.load_study(study_name="t", storage=open_storage(postgres_url))
    trials = study.trials
    assert 30 <= len(trials) <= 31  # the budget is the study's; one trial may be in flight at the stop
    evaluated = [t.user_attrs["genesis"]["config_fingerprint"] for t in trials if t.user_attrs["cached"] is False]
    assert len(evaluated) == len(set(evaluated)) <= 6
    assert max(s["explore"]["cache"]["total_trials"] for s in summaries) >= 30
