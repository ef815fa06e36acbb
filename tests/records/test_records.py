"""Result files as typed records: files written before schema versions are migrated and used,
newer or broken ones are refused naming the file and the version, and writes round-trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from genesis_core.records import (
    BestTrial,
    ChampionHistory,
    ChampionRecord,
    ChampionStore,
    RunFolder,
    RunRecord,
    SchemaError,
    ValidationReport,
    WalkForwardReport,
    read_record,
    write_record,
)
from genesis_core.records._base import _strict_json, renamed_scores
from tests.runs import artifacts, promote, validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA0 = ROOT / "tests" / "records" / "fixtures" / "schema0"  # written by the code before this package existed


@pytest.fixture
def old_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A results folder of the old shape (a validated, promoted run); its configs name data/ relative to the repo."""
    results = tmp_path / "results"
    shutil.copytree(SCHEMA0 / "runs" / "old", results / "runs" / "old")
    shutil.copytree(SCHEMA0 / "champions", results / "champions")
    monkeypatch.chdir(ROOT)
    return results


def test_old_files_are_migrated_on_read(old_results: Path):
    folder = RunFolder(old_results / "runs" / "old")
    raw = json.loads((folder.path / "run.json").read_text())
    assert "schema_version" not in raw and "optimizer_config" in raw
    run = folder.read_run()
    assert run.schema_version == RunRecord.SCHEMA and run.config == raw["optimizer_config"]  # renamed, not changed
    assert run.sessions[0].preflight is not None and run.cache.total_trials == raw["cache"]["total_trials"] == 6
    assert run.fixed_config.model_dump(mode="json", exclude={"data": {"symbol"}}) == raw["fixed_config"]  # data.symbol: new
    trials = artifacts(folder)
    assert [t.trial_number for t in trials] == [0, 1, 3, 5]
    first = json.loads((folder.path / "trials" / "000000.json").read_text())
    expected = renamed_scores(first)
    expected["trace"]["exits"]["liquidation"] = 0  # an exit added since (schema 3), which no older backtest had
    assert trials[0].model_dump(mode="json", exclude={"schema_version": True, "trades": True, "cached_from": True,
                                                      "not_finite": True, "series": True, "effective_config": {"data": {"symbol"}}}) == expected  # added since
    best = folder.read_best()
    assert best.result.trial_number == raw["best_trial"]["number"] == 5 and best.result.trace["exits"]["liquidation"] == 0
    report = folder.read_validation()
    added = {"pbo": True, "pbo_note": True,  # statistics added since: absent from an old file
             "deflated_sharpe": {"mean_correlation", "effective_trials", "sr0_effective", "dsr_effective", "other_runs",
                                 "other_trials"}}
    assert report.model_dump(mode="json", exclude={"schema_version": True, "overfitting": added, "refused": True,
                                                   "eligible": True, "left_out": True, "looked_before": True, "backtested_before": True,
                                                   "buy_and_hold": True,
                                                   "candidates": {"__all__": {"robustness", "deflated_sharpe"}}}) == \
        renamed_scores(json.loads(folder.validation_path.read_text()))
    assert report.refused == []  # schema 3: no candidate could be refused on a window before
    assert report.eligible is None and report.left_out is None and report.short() is None  # schema 4: not counted before
    assert report.buy_and_hold is None  # not recorded before
    assert report.candidates[0].explore.production_score == json.loads(folder.validation_path.read_text())["candidates"][0]["explore"]["score"]
    assert trials[0].metrics["classic_score"] == first["metrics"]["score"] and trials[0].score.production == first["score"]["phase2"]
    history_raw = json.loads((old_results / "champions" / "BTCUSD_1h.history.json").read_text())
    assert isinstance(history_raw, list)  # the old shape: a bare list
    store = ChampionStore(old_results, "BTCUSD", "1h")
    (entry,) = store.history()
    assert entry.action == "promote" and entry.champion is not None and entry.champion.run.trial == 5
    assert store.load() == entry.champion
    wf = read_record(SCHEMA0 / "runs" / "walk_forward.json", WalkForwardReport)
    assert [f.fold for f in wf.folds] == [1, 2] and wf.aggregate.folds_with_a_pass == 2
    assert wf.top_chosen_by == "validation" and "not out of sample" in (wf.biased() or "")  # its tops: the validation favourites


def test_a_trials_table_read_for_some_columns_holds_them_as_read_whole_and_the_rest_at_their_defaults(old_results: Path,
                                                                                                          tmp_path: Path):
    """Validation reads three columns of trials.csv: a 981,552-row table read whole took it to 5.3 GB.
    Read ``only`` for some columns (an old file's renamed ones too), a row holds those as the whole
    row does, its number and state, and nothing else."""
    from genesis_core.records import TrialRow

    old = RunFolder(old_results / "runs" / "old")
    current = tmp_path / "current"
    current.mkdir()
    full = [TrialRow.model_validate({**r.model_dump(), "pruned": "bar 7" if r.number == 1 else None})
            for r in old.read_trials_table()]
    RunFolder(current).write_trials_table([r.to_csv() for r in full])
    for folder in (old, RunFolder(current)):
        whole = folder.read_trials_table()
        assert [r.number for r in whole] == [0, 1, 2, 3, 4, 5]
        for only in (("production_score", "sharpe"), ("cached", "config_fingerprint", "param:exits.max_bars_held", "pruned")):
            rows = folder.read_trials_table(only)
            for row, all_of_it in zip(rows, whole, strict=True):
                kept = {"number", "state", *(c for c in only if c in TrialRow.model_fields)}
                assert row.model_dump(include=kept) == all_of_it.model_dump(include=kept)
                assert row.metrics == {m: all_of_it.metrics[m] for m in only if m in all_of_it.metrics}
                assert row.params == {p.removeprefix("param:"): all_of_it.params[p.removeprefix("param:")]
                                      for p in only if p.startswith("param:")}
                assert row.model_dump(exclude={*kept, "metrics", "params"}) == TrialRow(number=row.number, state=row.state).model_dump(
                    exclude={*kept, "metrics", "params"})
    assert [r.production_score for r in old.read_trials_table(("production_score",))][0] == 2.9303212066180997  # score_phase2


def test_an_old_run_is_validated_and_promoted_by_this_code_with_the_same_numbers(old_results: Path):
    run_dir = old_results / "runs" / "old"
    before = renamed_scores(json.loads((run_dir / "validation.json").read_text()))  # as this version names them
    after = validate(run_dir)
    assert after["schema_version"] == ValidationReport.SCHEMA
    for key in ("passed", "best", "evaluated_trials"):
        assert after[key] == before[key], key
    # the candidates' robustness map is measured since: it comes on top of the old numbers
    assert [{k: v for k, v in c.items() if k not in ("robustness", "deflated_sharpe")} for c in after["candidates"]] == \
        before["candidates"]
    assert after["candidates"][0]["deflated_sharpe"] == after["overfitting"]["deflated_sharpe"]  # each candidate's own since
    assert all(c["robustness"]["neighbours"] for c in after["candidates"])
    old_dsr = before["overfitting"]["deflated_sharpe"]  # the statistics added since (PBO, effective N) come on top
    # skewness and kurtosis are products since, the same on every machine (NumPy's power took the CPU's SIMD path): the
    # record's last digits were this machine's power's
    moments = {k: pytest.approx(old_dsr[k], rel=1e-14) for k in ("skewness", "kurtosis")}
    assert after["overfitting"]["deflated_sharpe"] | old_dsr | moments == after["overfitting"]["deflated_sharpe"]
    assert after["overfitting"]["mean_gap"] == before["overfitting"]["mean_gap"] and after["overfitting"]["pbo"]["configs"] >= 2
    decision = promote(run_dir)  # the old champion is this run's best: refused, and recorded in the new shape
    assert not decision.promoted and "already the champion" in decision.reason
    history = json.loads((old_results / "champions" / "BTCUSD_1h.history.json").read_text())
    assert history["schema_version"] == ChampionHistory.SCHEMA and [e["action"] for e in history["entries"]] == ["promote", "reject"]


def test_a_newer_schema_version_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "run.json"
    raw = json.loads((SCHEMA0 / "runs" / "old" / "run.json").read_text())
    path.write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(SchemaError, match=r"run.json: RunRecord of schema version 99, newer than this genesis-core reads"):
        read_record(path, RunRecord)


def test_a_file_that_does_not_fit_its_record_is_refused_naming_the_field(tmp_path: Path):
    path = tmp_path / "champion.json"
    raw = json.loads((SCHEMA0 / "champions" / "BTCUSD_1h.json").read_text())
    del raw["config_fingerprint"]
    path.write_text(json.dumps(raw))
    with pytest.raises(SchemaError, match=r"champion.json: not a valid ChampionRecord \(schema version 0\): config_fingerprint"):
        read_record(path, ChampionRecord)
    path.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        read_record(path, ChampionRecord)


def test_a_results_folder_s_hostile_files_are_each_one_line_naming_the_file_and_the_run_beside_them_is_read(old_results: Path):
    """A results folder from elsewhere (a colleague's, a shared disk) whose files are a link to
    /dev/zero, pipes, or arrays nested 100,000 deep: ``runs list`` ended in a MemoryError (under
    4 GiB), a pipe held ``runs show --trial`` and ``backtest --trial`` for ever (the MCP server's
    tools read the same files), and the nesting raised RecursionError. Each is now one line naming
    the file, and the intact run beside it is listed as before."""
    import os
    import resource
    import subprocess
    import sys

    from genesis_core.records import finished_runs

    hostile = old_results / "runs" / "hostile"
    shutil.copytree(old_results / "runs" / "old", hostile)
    (hostile / "validation.json").unlink()
    (hostile / "validation.json").symlink_to("/dev/zero")
    for name in ("trials.csv", "trials/000001.json"):
        (hostile / name).unlink()
        os.mkfifo(hostile / name)
    (hostile / "best_trial.json").write_text("[" * 100_000 + "]" * 100_000)
    (old_results / "runs" / "wf").mkdir()
    os.mkfifo(old_results / "runs" / "wf" / "walk_forward.json")  # a walk-forward's
    intact = RunFolder(old_results / "runs" / "old").read_run()

    def four_gib() -> None:  # what /dev/zero takes is this process's memory, not the machine's
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    def genesis(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "genesis_core", *args, "--results-dir", str(old_results)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, preexec_fn=four_gib)

    listed = genesis("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["run"], r["trials"], r["best_trial"]["number"]) for r in json.loads(listed.stdout)] == [
        ("old", intact.cache.total_trials, intact.best_trial.number)]
    assert listed.stderr.split() == (f"warning: a run left out: {hostile}/validation.json: cannot read: a device, not a file "
                                     f"warning: a walk-forward left out: {old_results}/runs/wf/walk_forward.json: cannot read: a "
                                     "pipe, not a file").split()
    for args, line in ((("runs", "show", "hostile"), f"{hostile}/validation.json: cannot read: a device, not a file"),
                       (("runs", "show", "hostile", "--trial", "1"), f"{hostile}/trials/000001.json: cannot read: a pipe, not a file"),
                       (("backtest", "--trial", "hostile:2"), f"{hostile}/trials.csv: cannot read: a pipe, not a file")):
        proc = genesis(*args)
        assert (proc.returncode, proc.stderr.split()[-12:]) == (2, f"error: {line}".split()[-12:]), (args, proc.stderr)
    with pytest.raises(SchemaError, match=r"best_trial.json: not valid JSON: maximum recursion depth exceeded"):
        read_record(hostile / "best_trial.json", BestTrial)
    runs, unreadable = finished_runs(old_results, within=old_results)  # the MCP server's list_runs: no link out is followed
    assert [r.name for r in runs] == ["old"] and unreadable == [f"{hostile}/validation.json leads outside the served folder; not read"]


def test_a_record_edited_to_hold_a_number_beyond_a_float_is_refused_naming_it(old_results: Path):
    """Python's parser reads NaN, Infinity and 1e400 (as inf). A run.json edited to hold one was
    listed with a best score of inf, and `runs list --json` ended in a traceback ("Out of range
    float values are not JSON compliant"). The file is now left out naming the number, the run
    beside it listed; the files Genesis-Core writes read as Python's parser reads them."""
    from tests.runs import genesis

    old = old_results / "runs" / "old"
    for path in (old / "run.json", old / "validation.json", old / "best_trial.json", *sorted((old / "trials").glob("*.json"))):
        assert _strict_json(path.read_bytes()) == json.loads(path.read_text()), path
    edited = old_results / "runs" / "edited"
    for number in ("1e400", "NaN", "-Infinity"):
        shutil.rmtree(edited, ignore_errors=True)
        shutil.copytree(old, edited)
        run = (edited / "run.json").read_text()
        (edited / "run.json").write_text(run.replace('"score_phase2": 7.519390553420035', f'"score_phase2": {number}', 1))
        listed = genesis("runs", "list", "--results-dir", str(old_results), "--json")
        assert listed.returncode == 0 and [r["run"] for r in json.loads(listed.stdout)] == ["old"], listed.stderr
        assert listed.stderr.split() == (f"warning: a run left out: {edited}/run.json: not valid JSON: {number} is not a finite "
                                         "number (Genesis-Core writes strict JSON)").split()


def test_records_round_trip_and_the_clock_is_passed_in(old_results: Path, tmp_path: Path):
    best = RunFolder(old_results / "runs" / "old").read_best()
    write_record(tmp_path / "b.json", best)
    assert read_record(tmp_path / "b.json", BestTrial) == best
    store = ChampionStore(tmp_path / "r", "BTCUSD", "1h", clock=lambda: 1_700_000_000.25)
    assert store.now() == "2023-11-14T22:13:20.250000Z"
    folder = RunFolder(tmp_path / "run", clock=lambda: 0.0)
    assert folder.now() == "1970-01-01T00:00:00Z"


def test_foreign_files_in_trials_are_not_read_as_artifacts(old_results: Path):
    folder = RunFolder(old_results / "runs" / "old")
    (folder.path / "trials" / "notes.json").write_text("{}")
    (folder.path / "trials" / "000007.json.123.tmp").write_text("{")
    assert folder.trial_numbers() == [0, 1, 3, 5]


def test_a_trial_written_before_the_liquidation_exit_re_runs_identical(tmp_path: Path):
    """Schema 3 added the engine's ``liquidation`` exit to every trace. A run's artifacts written
    before it (schema 2, no such count) are migrated with a count of 0, which no backtest before it
    could have had: `genesis check-equivalence` of a run made before the change found every trial
    differing by that count alone."""
    from tests.optimizer.test_optimizer import write_config
    from tests.runs import genesis, optimize

    run_dir = Path(optimize(write_config(tmp_path, meta={"stop": {"max_trials": 4}}))["run_dir"])
    folder = RunFolder(run_dir)
    for number in folder.evaluated_numbers():
        path = folder.trial_path(number)
        raw = json.loads(path.read_text())
        assert raw["schema_version"] == 3 and raw["trace"]["exits"].pop("liquidation") == 0
        path.write_text(json.dumps({**raw, "schema_version": 2}))  # as the code before it wrote it
    best = json.loads((run_dir / "best_trial.json").read_text())
    del best["result"]["trace"]["exits"]["liquidation"]
    (run_dir / "best_trial.json").write_text(json.dumps({**best, "schema_version": 2, "result": {**best["result"], "schema_version": 2}}))
    check = genesis("check-equivalence", str(run_dir), "--all", "--json")
    assert check.returncode == 0, check.stdout
    results = json.loads(check.stdout)
    assert len(results) == len(folder.evaluated_numbers()) >= 2 and all(r["ok"] for r in results)
    assert folder.read_best().result.trace["exits"]["liquidation"] == 0
