"""Runs at the command line, as Freqtrade users list and show hyperopt results: `genesis runs list`,
`genesis runs show RUN [--trial N]`, and `genesis backtest --trial RUN:N` re-running a stored trial."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.runs import genesis as _genesis


@pytest.fixture(scope="module")
def results(validated_run: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "results"
    shutil.copytree(validated_run, root / "runs" / "t")
    return root


def _rows(results: Path) -> list[dict]:
    with open(results / "runs" / "t" / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def test_runs_list_and_show_say_what_the_files_hold(results):
    listed = _genesis("runs", "list", "--results-dir", str(results), "--json")
    assert listed.returncode == 0, listed.stderr
    run = json.loads((results / "runs" / "t" / "run.json").read_text())
    validation = json.loads((results / "runs" / "t" / "validation.json").read_text())
    assert json.loads(listed.stdout) == [{
        "run": "t", "study": "t", "trials": 16, "best_trial": run["best_trial"], "last_session": run["sessions"][-1]["finished"],
        "validation": {"passed": validation["passed"], "best": validation["best"]}}]
    table = _genesis("runs", "list", "--results-dir", str(results)).stdout
    best = run["best_trial"]
    assert f"{best['production_score']:.2f}" in table and f"{len(validation['passed'])} of {len(validation['candidates'])}" in table
    shown = _genesis("runs", "show", "t", "--results-dir", str(results))
    assert shown.returncode == 0, shown.stderr
    states = {s: n for s, n in run["states"].items()}
    assert f"{run['cache']['total_trials']} trials: " in shown.stdout and f"{states['COMPLETE']} COMPLETE" in shown.stdout
    assert (f"best trial #{best['number']}: production score {best['production_score']:.4f} (genesis runs show "
            f"{results / 'runs' / 't'} --trial {best['number']})") in shown.stdout.replace("\n", "")
    assert "{'" not in shown.stdout and "None" not in shown.stdout  # no Python reprs in human output
    assert "best: #" in shown.stdout  # the validation table follows
    empty = _genesis("runs", "list", "--results-dir", str(results.parent / "nothing"))
    assert empty.returncode == 0 and "no runs in" in empty.stdout
    negative = _genesis("runs", "show", "t", "--trial", "-1", "--results-dir", str(results))  # it said "expected RUN:N" of t:-1
    assert negative.returncode == 2 and "Invalid value for '--trial'" in negative.stdout + negative.stderr


def _in_80_columns(*args: str) -> str:
    """A command's output in a terminal of 80 columns, nothing cut short (lines printed whole, as the
    reasons a candidate failed are, may be wider: the terminal wraps them)."""
    from rich.console import Console
    from typer.testing import CliRunner

    from genesis_core import cli

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "out", Console(width=80))  # writes to sys.stdout, which the runner captures
        result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
    return result.output


def test_runs_list_and_show_cut_no_figure_or_time_short_in_80_columns(results):
    """The boxed tables cut the time of a run's last session to ``2026-12-…`` and every score of
    the validation table to ``-7.…`` in 80 columns."""
    run = json.loads((results / "runs" / "t" / "run.json").read_text())
    validation = json.loads((results / "runs" / "t" / "validation.json").read_text())
    listed = _in_80_columns("runs", "list", "--results-dir", str(results))
    assert run["sessions"][-1]["finished"] in listed and f"{run['best_trial']['production_score']:.2f}" in listed
    shown = _in_80_columns("runs", "show", "t", "--results-dir", str(results))
    assert run["sessions"][-1]["started"] in shown
    assert all(f"{c['validation_score']:.2f}" in shown for c in validation["candidates"])


def test_runs_show_trial_and_backtest_trial_reproduce_the_stored_trial(results, tmp_path, monkeypatch):
    rows = _rows(results)
    evaluated = next(r for r in rows if r["cached"] == "False" and r["outcome"] == "VALID")
    n = int(evaluated["number"])
    artifact = json.loads((results / "runs" / "t" / "trials" / f"{n:06d}.json").read_text())
    shown = _genesis("runs", "show", "t", "--trial", str(n), "--results-dir", str(results))
    assert shown.returncode == 0, shown.stderr
    assert f"production score {artifact['score']['production']:.4f}" in shown.stdout
    suggested = re.search(r"re-run it: genesis (backtest --trial \S+)", shown.stdout)  # as printed: `t:N` said "no run at t" here
    assert suggested and suggested.group(1) == f"backtest --trial {results / 'runs' / 't'}:{n}"
    assert json.loads(_genesis(*suggested.group(1).split(), "--out", str(tmp_path / "s.json"), "--json").stdout)["metrics"] == \
        json.loads((results / "runs" / "t" / "trials" / f"{n:06d}.json").read_text())["metrics"]
    with monkeypatch.context() as here:  # where commands look by default: the study's name
        here.chdir(results.parent)
        assert f"re-run it: genesis backtest --trial t:{n}\n" in _genesis("runs", "show", "t", "--trial", str(n)).stdout
    m = artifact["metrics"]  # fractions as percentages, the rest as stored
    for name, value in (("total_return", f"{m['total_return']:+.2%}"), ("max_drawdown", f"{m['max_drawdown']:.2%}"),
                        ("win_rate", f"{m['win_rate']:.2%}"), ("exposure", f"{m['exposure']:.2%}"), ("sharpe", f"{m['sharpe']:,.4f}")):
        assert re.search(rf"│ {name} +│ {re.escape(value)} +│", shown.stdout), (name, value)
    as_json = json.loads(_genesis("runs", "show", "t", "--trial", str(n), "--results-dir", str(results), "--json").stdout)
    assert as_json == artifact
    out = tmp_path / "rerun.json"
    rerun = _genesis("backtest", "--trial", f"t:{n}", "--results-dir", str(results), "--out", str(out), "--json")
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["metrics"] == artifact["metrics"] and result["fingerprints"] == artifact["fingerprints"]
    # a result file holding an effective config runs as a config: a trial artifact, best_trial.json
    for path in (results / "runs" / "t" / "trials" / f"{n:06d}.json", results / "runs" / "t" / "best_trial.json"):
        again = _genesis("backtest", "-c", str(path), "--out", str(tmp_path / "again.json"), "--json")
        assert again.returncode == 0, again.stderr
        stored = json.loads(path.read_text())
        assert json.loads(again.stdout)["metrics"] == stored.get("result", stored)["metrics"]
    duplicate = next(r for r in rows if r["cached"] == "True")
    refused = _genesis("backtest", "--trial", f"t:{duplicate['number']}", "--results-dir", str(results))
    assert refused.returncode == 2 and f"use t:{duplicate['cache_reused_from']}" in refused.stderr
    for ref, message in [("t", "expected RUN:N"), ("t:999", "run t has no trial 999"), ("nope:1", "no run at nope")]:
        bad = _genesis("backtest", "--trial", ref, "--results-dir", str(results))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    both = _genesis("backtest", "--trial", f"t:{n}", "--champion", "--results-dir", str(results))
    assert both.returncode == 2 and "give one of CONFIG (or --config), --champion or --trial" in both.stderr


def test_a_run_with_relative_paths_is_re_run_validated_and_reported_from_another_folder(tmp_path, monkeypatch):
    """A config's relative paths are read from where genesis runs. A run's artifacts keep them as
    written, and every command that re-ran one from another folder (`backtest --trial`,
    `check-equivalence`, `validate`, `report`) said `data file not found: data/c.csv.gz in HERE`.
    Each backtest now records the folder it read them from (``workdir``)."""
    import yaml

    from tests.conftest import BTC_FILE, ROOT
    from tests.runs import optimize
    from tests.validation.conftest import validated_config

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(BTC_FILE, project / "data" / "c.csv.gz")
    shutil.copy(ROOT / "src" / "genesis_core" / "strategy" / "models" / "btcusd_1h.json", project / "m.json")
    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    base["params"]["model"], base["data"]["path"] = "m.json", "data/c.csv.gz"  # a model of one's own, beside the data
    (project / "base.yaml").write_text(yaml.safe_dump(base))
    config = validated_config(project, meta={"base_config": "base.yaml", "data": "data/c.csv.gz", "results_dir": "results",
                                             "stop": {"max_trials": 6}})
    monkeypatch.chdir(project)
    optimize(config)
    run = project / "results" / "runs" / "t"
    assert _genesis("validate", str(run)).returncode == 0
    validated_here = json.loads((run / "validation.json").read_text())
    numbers = sorted(int(p.stem) for p in (run / "trials").glob("*.json"))
    artifact = json.loads((run / "trials" / f"{numbers[-1]:06d}.json").read_text())
    assert artifact["effective_config"]["data"]["path"] == "data/c.csv.gz"  # as written: its fingerprints are unchanged
    assert artifact["effective_config"]["params"]["model"] == "m.json" and artifact["effective_config"]["workdir"] == str(project)

    monkeypatch.chdir(elsewhere)
    checked = _genesis("check-equivalence", str(run))
    assert checked.returncode == 0 and f"re-run from artifacts: {len(numbers)} of {len(numbers)} identical" in checked.stdout, \
        checked.stdout + checked.stderr
    rerun = _genesis("backtest", "--trial", f"{run}:{numbers[-1]}", "--out", str(elsewhere / "r.json"), "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["metrics"] == artifact["metrics"]
    (run / "validation.json").unlink()
    assert _genesis("validate", str(run)).returncode == 0
    validated_elsewhere = json.loads((run / "validation.json").read_text())
    assert validated_elsewhere["candidates"] == validated_here["candidates"] and validated_here["candidates"]
    reported = _genesis("report", str(run), "--out", str(elsewhere / "r.html"))
    assert reported.returncode == 0 and (elsewhere / "r.html").stat().st_size > 0, reported.stderr

    monkeypatch.chdir(project)  # where it first ran, said once
    (project / "data" / "c.csv.gz").rename(project / "data" / "gone.csv.gz")
    gone = _genesis("backtest", "--trial", f"{run}:{numbers[-1]}")
    assert gone.returncode == 2 and f"error: data file not found: data/c.csv.gz in {project} (candles" in gone.stderr, gone.stderr
    (project / "data" / "gone.csv.gz").rename(project / "data" / "c.csv.gz")

    moved = tmp_path / "moved"  # a project copied to another machine: its paths are read from where genesis runs
    project.rename(moved)
    monkeypatch.chdir(moved)
    run = moved / "results" / "runs" / "t"
    again = _genesis("check-equivalence", str(run))
    assert again.returncode == 0 and f"{len(numbers)} of {len(numbers)} identical" in again.stdout, again.stdout + again.stderr
    monkeypatch.chdir(elsewhere)
    lost = _genesis("backtest", "--trial", f"{run}:{numbers[-1]}")
    assert lost.returncode == 2
    assert f"error: data file not found: data/c.csv.gz in {elsewhere}, nor in {project} where it first ran" in lost.stderr
