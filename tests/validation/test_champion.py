"""Champions: gated promotion, history, rollback, atomic writes, backtest --champion, merge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genesis_core.backtest import BacktestConfig, Backtester
from genesis_core.champion import rollback
from genesis_core.errors import ConfigError
from genesis_core.records import ChampionStore, ChampionWriteError
from genesis_core.records import (
    _base as record_files,  # where every record file is written: the fault is injected there
)
from genesis_core.study import load_study_config
from tests.optimizer.test_optimizer import ROOT
from tests.runs import artifacts, genesis, promote
from tests.validation.conftest import validated_config


def load_champion(results: Path, symbol: str, timeframe: str) -> dict | None:
    champion = ChampionStore(results, symbol, timeframe).load()
    return None if champion is None else champion.model_dump(mode="json")


def load_history(results: Path, symbol: str, timeframe: str) -> list[dict]:
    return [e.model_dump(mode="json") for e in ChampionStore(results, symbol, timeframe).history()]


def _rollback(results: Path, to: str | None = None):
    return rollback(ChampionStore(results, "BTCUSD", "1h"), to)


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "validation.json").read_text())


def test_the_in_sample_best_that_fails_out_of_sample_is_not_promoted(tmp_path):
    """The whole workflow from the CLI: preflight, explore, validate, automatic promotion."""
    path = validated_config(tmp_path, promotion={"enabled": True})
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "results" / "runs" / "t"
    report = _report(run_dir)
    explore_best = max(report["candidates"], key=lambda c: c["explore"]["production_score"])
    assert not explore_best["passed"]
    current = load_champion(tmp_path / "results", "BTCUSD", "1h")
    assert current["run"]["trial"] == report["best"] != explore_best["trial"]
    assert "promoted" in proc.stdout and "Validation of t" in proc.stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert run["sessions"][-1]["preflight"]["ok"] is True
    # asked for by number, the favourite is refused with the reason, and that is recorded
    decision = promote(run_dir, explore_best["trial"])
    assert not decision.promoted and decision.reason.startswith("validated: failed validation: ")
    assert "max_drawdown" in decision.reason
    last = load_history(tmp_path / "results", "BTCUSD", "1h")[-1]
    assert last["action"] == "reject" and last["trial"] == explore_best["trial"] and last["reason"] == decision.reason
    assert load_champion(tmp_path / "results", "BTCUSD", "1h") == current


def _with_promotion(run_dir: Path, **settings) -> None:
    """Change the promotion settings the run was made with (as if its config had said so)."""
    path = run_dir / "run.json"
    run = json.loads(path.read_text())
    run["config"]["promotion"] = {**run["config"]["promotion"], **settings}
    path.write_text(json.dumps(run))


def test_the_floor_and_the_overfitting_gates_each_refuse_and_are_recorded(fresh_run):
    results = fresh_run.parent.parent
    report = _report(fresh_run)
    best = next(c for c in report["candidates"] if c["trial"] == report["best"])
    o = report["overfitting"]
    dsr, value = o["deflated_sharpe"], o["pbo"]
    assert dsr["effective_trials"] < dsr["n_trials"] and dsr["dsr_effective"] > dsr["dsr"]  # correlated trials: fewer
    assert 2 <= value["configs"] <= report["evaluated_trials"] and value["splits"] == 12870  # the distinct VALID ones
    returns = [w["metrics"]["total_return"] for w in best["windows"]]
    compounded = (1 + returns[0]) * (1 + returns[1]) - 1
    assert compounded < 0  # the favourite of this 16-trial search loses money out of sample
    for settings, gate, detail in [
        ({"min_validation_return": 0.0}, "floor", f"validation return {compounded:+.2%} over 2 window(s), not above the floor +0.00%"),
        ({"min_dsr": 0.95}, "deflated sharpe", f"DSR {dsr['dsr_effective']:.3f} below min_dsr 0.95 (N_eff "),
        ({"max_pbo": value["pbo"] / 2}, "overfitting",
         f"PBO {value['pbo']:.3f} above max_pbo {value['pbo'] / 2:g} ({value['configs']} configs, 12,870 splits)"),  # as validate says it
    ]:
        _with_promotion(fresh_run, **settings)
        decision = promote(fresh_run)
        failed = [g for g in decision.gates if not g.passed]
        assert not decision.promoted and [g.name for g in failed] == [gate] and failed[0].detail.startswith(detail)
        last = load_history(results, "BTCUSD", "1h")[-1]
        assert last["action"] == "reject" and f"{gate}: {detail}" in last["reason"]
        _with_promotion(fresh_run, min_validation_return=None, min_dsr=None, max_pbo=None)
    assert load_champion(results, "BTCUSD", "1h") is None
    # buying and holding BTC over June-November 2022 lost more: a floor below both, beating it, passes
    from genesis_core.data import load_candles

    candles = load_candles(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")
    held = 1.0
    for w in best["windows"]:
        bars = candles.window(w["start"], w["end"], 0).candles
        held *= bars.close[-1] / bars.open[0]
    floor_refused = next(line for line in load_history(results, "BTCUSD", "1h")[-3]["reason"].split("; ") if line.startswith("floor"))
    assert floor_refused.endswith(f"not above the floor +0.00%, buying and holding made {held - 1:+.2%} there (not a gate: "
                                  "promotion.beat_buy_and_hold)")  # said when not gated: the market's own move beside it
    _with_promotion(fresh_run, min_validation_return=-0.5, beat_buy_and_hold=True, min_dsr=0.5, max_pbo=0.5)
    done = promote(fresh_run)
    assert done.promoted, done.reason
    floor = next(g for g in done.gates if g.name == "floor")
    assert floor.detail.endswith(f"above buy-and-hold {held - 1:+.2%}") and held - 1 < compounded
    assert {g.name for g in done.gates} == {"validated", "reproduces", "improves", "floor", "deflated sharpe", "overfitting"}


def test_the_deflated_sharpe_gate_holds_the_trial_promoted_to_its_own_ratio(fresh_run):
    """`champion promote --trial N` of a candidate other than the top-ranked one was held to the top
    one's deflated Sharpe ratio: a trial with a weaker explore Sharpe passed on another's. Each
    candidate now has its own, measured on its explore returns against every evaluated trial."""
    import math

    import numpy as np

    from genesis_core.backtest import Backtester, build_config
    from genesis_core.metrics import bar_returns
    from genesis_core.records import RunFolder
    from genesis_core.validation._stats import deflated_sharpe

    report = _report(fresh_run)
    first, second = (next(c for c in report["candidates"] if c["trial"] == n) for n in report["passed"][:2])
    assert report["overfitting"]["deflated_sharpe"] == first["deflated_sharpe"]  # the run's: the top-ranked one's
    folder = RunFolder(fresh_run)
    trials = artifacts(folder)
    bt = Backtester()
    per_bar = math.sqrt(bt.candles(trials[0].effective_config).bars_per_year)
    sharpes = np.array([t.metrics["sharpe"] / per_bar for t in trials if t.metrics["sharpe"] is not None])
    for c in (first, second):  # each its own: its explore returns against the same trials and N_eff
        equity = bt.run(build_config(folder.read_trial(c["trial"]).effective_config.model_dump(mode="json"))).engine.equity
        d = c["deflated_sharpe"]
        assert d["trial"] == c["trial"] and d["n_trials"] == len(sharpes)
        assert d["dsr_effective"] == deflated_sharpe(bar_returns(equity), sharpes, d["effective_trials"])["dsr"]
    low, high = sorted((first, second), key=lambda c: c["deflated_sharpe"]["dsr_effective"])
    assert high["deflated_sharpe"]["dsr_effective"] > low["deflated_sharpe"]["dsr_effective"]
    between = (high["deflated_sharpe"]["dsr_effective"] + low["deflated_sharpe"]["dsr_effective"]) / 2
    _with_promotion(fresh_run, min_dsr=between)
    refused = promote(fresh_run, low["trial"])
    gate = next(g for g in refused.gates if g.name == "deflated sharpe")
    assert not refused.promoted and not gate.passed
    assert gate.detail.startswith(f"DSR {low['deflated_sharpe']['dsr_effective']:.3f} below min_dsr {between:g}")
    done = promote(fresh_run, high["trial"])
    assert done.promoted, done.reason
    assert next(g for g in done.gates if g.name == "deflated sharpe").detail.startswith(
        f"DSR {high['deflated_sharpe']['dsr_effective']:.3f} >= min_dsr")


def test_the_deflated_sharpe_ratio_counts_the_configs_other_runs_tried_on_the_same_bars(fresh_run):
    """A second study on the same bars, then the best of both: the DSR counted only the validated
    run's own trials, so running more studies deflated nothing. It now counts every config another
    run of the market evaluated on days of its explore window (each once, none the run tried
    itself), a run on other bars not; and promotion refuses a DSR counted before such a run."""
    import csv
    import math

    import numpy as np

    from genesis_core.backtest import Backtester, build_config
    from genesis_core.metrics import bar_returns
    from genesis_core.records import RunFolder
    from genesis_core.validation._stats import deflated_sharpe
    from tests.runs import genesis, optimize, validate

    tmp = fresh_run.parent.parent.parent
    before = _report(fresh_run)
    top = before["candidates"][0]
    assert before["overfitting"]["deflated_sharpe"]["other_runs"] == [] and top["deflated_sharpe"]["other_trials"] == 0
    other_space = {"exits.max_bars_held": {"type": "categorical", "choices": [6, 18, 36, 72]},
                   "exits.stop_loss_atr": {"type": "categorical", "choices": [1.0, 3.0]}}
    optimize(validated_config(tmp, "other.yaml", parameters=other_space, meta={"study_name": "other"}))
    optimize(validated_config(tmp, "later.yaml", parameters=other_space,  # explores 2022-09..11: none of these bars
                              meta={"study_name": "later", "sample_start": "2022-09-01", "sample_end": "2022-11-30"}))

    _with_promotion(fresh_run, min_dsr=0.0)  # any DSR passes: what refuses is the count
    refused = promote(fresh_run, top["trial"])
    gate = next(g for g in refused.gates if g.name == "deflated sharpe")
    mine = {r["config_fingerprint"] for r in csv.DictReader((fresh_run / "trials.csv").open())}
    theirs = {r["config_fingerprint"]: float(r["sharpe"]) for r in csv.DictReader((tmp / "results/runs/other/trials.csv").open())
              if r["state"] == "COMPLETE" and r["sharpe"] and r["config_fingerprint"] not in mine}
    assert 0 < len(theirs) < 16  # some of its 16 trials were duplicates: each config counts once
    assert not refused.promoted and not gate.passed
    assert gate.detail == (f"DSR {top['deflated_sharpe']['dsr_effective']:.3f} counted 0 configs of other runs on these bars, "
                           f"and they have evaluated {len(theirs)} this run did not since (other): the choice is among more "
                           f"trials; run genesis validate t again")

    after = validate(fresh_run)
    d = next(c for c in after["candidates"] if c["trial"] == top["trial"])["deflated_sharpe"]
    folder = RunFolder(fresh_run)
    trials = artifacts(folder)
    bt = Backtester()
    per_bar = math.sqrt(bt.candles(trials[0].effective_config).bars_per_year)
    sharpes = np.array([t.metrics["sharpe"] / per_bar for t in trials if t.metrics["sharpe"] is not None]
                       + [s / per_bar for s in theirs.values()])
    returns = bar_returns(bt.run(build_config(folder.read_trial(top["trial"]).effective_config.model_dump(mode="json"))).engine.equity)
    assert (d["n_trials"], d["other_trials"], d["other_runs"]) == (top["deflated_sharpe"]["n_trials"] + len(theirs), len(theirs), ["other"])
    assert d["dsr"] == deflated_sharpe(returns, sharpes, len(sharpes))["dsr"]
    assert d["dsr_effective"] == deflated_sharpe(returns, sharpes, d["effective_trials"])["dsr"]
    assert d["sr0_per_bar"] > top["deflated_sharpe"]["sr0_per_bar"]  # more trials: luck alone goes further
    assert promote(fresh_run, top["trial"]).promoted  # counted now
    # said before a run too: a third study on these bars is told what its DSR will count (t's and other's)
    from genesis_core.preflight import preflight_file

    tried = {r["config_fingerprint"] for name in ("t", "other") for r in csv.DictReader((tmp / f"results/runs/{name}/trials.csv").open())
             if r["state"] == "COMPLETE" and r["sharpe"]}
    check = next(c for c in preflight_file(validated_config(tmp, "third.yaml", meta={"study_name": "third"})) if c.name == "trials before")
    assert (check.status, check.detail) == ("pass", f"{len(tried)} configs were tried on days of the explore window by 2 other run(s) "
                                                    "here (other, t): the deflated Sharpe ratio of this run's best counts them with its own")
    shown = genesis("validate", str(fresh_run))
    assert (f"given {d['n_trials']} evaluated configs ({len(theirs)} of them by 1 other run(s) on these bars: other)"
            in " ".join(shown.stdout.split()))


def test_a_corrupt_trials_table_in_another_run_does_not_break_validation_and_is_one_line_of_its_own(fresh_run):
    """Another run's trials.csv edited by hand (a trial number that is no number) ended every other
    run's validation of the market in a pydantic traceback, since validation counts the other runs'
    trials. That run is now left out, and its own validation is one line naming the file and line."""
    import shutil

    from tests.runs import genesis, validate

    junk = fresh_run.parent / "junk"
    shutil.copytree(fresh_run, junk)
    table = junk / "trials.csv"
    header, first, *rest = table.read_text().splitlines()
    table.write_text("\n".join([header, "abc" + first[first.index(","):], *rest]) + "\n")
    report = validate(fresh_run)
    assert report["overfitting"]["deflated_sharpe"]["other_runs"] == []  # left out (a copy would add no new config anyway)
    refused = genesis("validate", str(junk))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"error: {table}: line 2 is not a trial's row: number: Input should be a valid integer" in " ".join(refused.stderr.split())
    shown = genesis("runs", "show", str(junk))  # validated: its staleness reads trials.csv's numbers alone
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert f"error: {table}: line 2 is not a trial's row: number abc is not a whole number" in " ".join(shown.stderr.split())
    columns = header.count(",") + 1
    for line, cells in ((",".join(first.split(",")[:3]), 3), (first + ",7", columns + 1)):  # cut short, one cell too many
        table.write_text("\n".join([header, *rest[:2], line, *rest[2:]]) + "\n")
        for command in (("validate", str(junk)), ("runs", "show", str(junk))):
            refused = genesis(*command)  # a TypeError and an AttributeError traceback before
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, (command, refused.stderr)
            assert (f"error: {table}: line 4 is not a trial's row: {cells} cell(s) under a header of {columns}"
                    in " ".join(refused.stderr.split())), (command, refused.stderr)


def test_min_improvement_refusal_promotion_and_rollback(fresh_run):
    results = fresh_run.parent.parent
    first, second = _report(fresh_run)["passed"][:2]  # ranked: `first` scores better out of sample
    assert promote(fresh_run, second).promoted  # no champion yet
    gain = next(c["validation_score"] for c in _report(fresh_run)["candidates"] if c["trial"] == first) - \
        next(c["validation_score"] for c in _report(fresh_run)["candidates"] if c["trial"] == second)
    assert gain > 0
    refused = promote(fresh_run, first, min_improvement=gain + 1.0)
    assert not refused.promoted
    assert f"{gain:+.4f} (below min_improvement {gain + 1.0:g}" in refused.reason
    assert load_champion(results, "BTCUSD", "1h")["run"]["trial"] == second
    done = promote(fresh_run, first, min_improvement=gain / 2)
    assert done.promoted and load_champion(results, "BTCUSD", "1h")["run"]["trial"] == first
    worse = promote(fresh_run, second)
    assert not worse.promoted and "not above the champion" in worse.reason
    assert not promote(fresh_run, first).promoted  # already the champion

    back = _rollback(results)
    assert back.promoted and load_champion(results, "BTCUSD", "1h")["run"]["trial"] == second
    actions = [e["action"] for e in load_history(results, "BTCUSD", "1h")]
    assert actions == ["promote", "reject", "promote", "reject", "reject", "rollback"]
    with pytest.raises(ConfigError, match="nothing earlier to roll back to"):
        _rollback(results)
    target = load_history(results, "BTCUSD", "1h")[2]["config_fingerprint"]
    assert _rollback(results, to=target[:8]).champion.run.trial == first


def test_the_champion_file_says_what_it_is_and_runs_with_backtest_champion(fresh_run):
    results = fresh_run.parent.parent
    decision = promote(fresh_run)
    assert decision.promoted
    c = load_champion(results, "BTCUSD", "1h")
    artifact = json.loads((fresh_run / "trials" / f"{c['run']['trial']:06d}.json").read_text())
    assert c["effective_config"] == artifact["effective_config"]
    assert c["config_fingerprint"] == artifact["fingerprints"]["config"]
    assert c["data"]["file"] == artifact["fingerprints"]["data_file"]
    assert [w["start"] for w in c["data"]["validation"]] == ["2022-06-01", "2022-09-01"]
    assert c["metrics"]["explore"] == artifact["metrics"] and len(c["metrics"]["validation"]) == 2
    assert {"code_version", "created", "scores", "symbol", "timeframe"} <= set(c)
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "backtest", "--champion", "--results-dir", str(results),
                           "--json", "--out", str(results / "bt.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rerun = json.loads(proc.stdout)
    assert rerun["metrics"] == c["metrics"]["explore"] and rerun["fingerprints"]["config"] == c["config_fingerprint"]
    # the optimizer merges the champion into trials, unless told not to
    config = validated_config(fresh_run.parent.parent.parent, "merge.yaml")
    assert load_study_config(config).spec().champion == c["effective_config"]["params"]
    skip = validated_config(fresh_run.parent.parent.parent, "skip.yaml", meta={"stop": {"max_trials": 16}, "skip_champion_merge": True})
    assert load_study_config(skip).spec().champion is None


def test_a_backtest_of_the_champion_or_a_trial_on_bars_it_was_searched_or_chosen_on_says_it_is_in_sample(fresh_run):
    """`genesis backtest --champion` ran on the champion's own explore window by default and showed
    the search's fit as a result, without a word; nor was a window it was chosen on told apart."""
    results = fresh_run.parent.parent
    assert promote(fresh_run).promoted
    c = load_champion(results, "BTCUSD", "1h")
    study, trial = c["run"]["study"], c["run"]["trial"]
    tail = "in-sample, so its numbers there are not what the config does on bars it has not seen"

    def said(*args: str) -> list[str]:
        ran = genesis("backtest", *args, "--results-dir", str(results), "--out", str(results / "bt.json"), "--json")
        assert ran.returncode == 0, ran.stderr
        return [line.strip() for line in " ".join(ran.stderr.split()).split("warning: ") if "overlaps" in line and "in-sample" in line]

    searched = f"the explore window of the search that found the champion ({study}): {tail}"
    assert said("--champion") == [f"the backtest window 2022-03-01..2022-05-31 overlaps 2022-03-01..2022-05-31, {searched}"]
    assert said("--champion", "--start", "2022-05-20", "--end", "2022-06-10") == [
        f"the backtest window 2022-05-20..2022-06-10 overlaps 2022-03-01..2022-05-31, {searched}",
        f"the backtest window 2022-05-20..2022-06-10 overlaps 2022-06-01..2022-08-31, a validation window the champion was "
        f"chosen on ({study}): {tail}"]
    assert said("--champion", "--start", "2022-12-01", "--end", "2022-12-31") == []  # after every bar it was searched or chosen on
    found = f"the explore window of the search that found trial {{}}: {tail}"
    assert said("--trial", f"{fresh_run}:{trial}") == [
        "the backtest window 2022-03-01..2022-05-31 overlaps 2022-03-01..2022-05-31, " + found.format(f"{fresh_run}:{trial}")]
    assert said("-c", str(fresh_run / "trials" / f"{trial:06d}.json")) == [
        "the backtest window 2022-03-01..2022-05-31 overlaps 2022-03-01..2022-05-31, " + found.format(trial)]
    assert said("-c", str(fresh_run / "trials" / f"{trial:06d}.json"), "--start", "2022-06-01", "--end", "2022-06-30") == []
    # a backtest's result says what holding its window made; a trial's artifact, as its record was before, does not
    assert json.loads((results / "bt.json").read_text())["buy_and_hold"] == pytest.approx(
        Backtester().candles(BacktestConfig.model_validate(c["effective_config"])).window("2022-06-01", "2022-06-30", 0).held_return, rel=1e-15)
    assert not any("buy_and_hold" in path.read_text() for path in (fresh_run / "trials").iterdir())
    edited = json.loads((fresh_run / "trials" / f"{trial:06d}.json").read_text())  # a window edited by hand: no line, no error
    edited["window"]["first_bar"] = "garbage"
    (results / "edited.json").write_text(json.dumps(edited))
    assert said("-c", str(results / "edited.json")) == []


def test_a_crash_mid_promotion_never_leaves_a_half_written_champion(fresh_run, monkeypatch):
    results = fresh_run.parent.parent
    first, second = _report(fresh_run)["passed"][:2]
    assert promote(fresh_run, second).promoted
    before = (results / "champions" / "BTCUSD_1h.json").read_text()

    def crash(path: Path, text: str) -> None:
        # died while writing the temporary file (named by the writer's pid, here one that cannot exist)
        path.with_name(f"{path.name}.{2**22 + 99}.tmp").write_text(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(record_files, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        promote(fresh_run, first)
    monkeypatch.undo()
    assert (results / "champions" / "BTCUSD_1h.json").read_text() == before  # the old champion, whole

    assert list((results / "champions").glob("*.tmp"))  # what the dead writer left ...

    # dying after the champion is replaced but before its history entry is marked done
    real, writes = record_files.atomic_write, []

    def die_on_the_third_write(path: Path, text: str) -> None:
        writes.append(path.name)
        if len(writes) == 3:
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(record_files, "atomic_write", die_on_the_third_write)
    with pytest.raises(KeyboardInterrupt):
        promote(fresh_run, first)
    monkeypatch.undo()
    assert writes == ["BTCUSD_1h.history.json", "BTCUSD_1h.json", "BTCUSD_1h.history.json"]  # pending, champion, done
    assert not list((results / "champions").glob("*.tmp"))  # ... is removed by the next operation
    shown = load_champion(results, "BTCUSD", "1h")
    assert shown["run"]["trial"] == first
    last = load_history(results, "BTCUSD", "1h")[-1]  # the history names the champion that `show` names
    assert last["action"] == "promote" and last["state"] == "done" and last["champion"] == shown
    assert _rollback(results).champion.run.trial == second
    assert [(e["action"], e["state"]) for e in load_history(results, "BTCUSD", "1h")] == [
        ("promote", "done"), ("promote", "done"), ("rollback", "done")]


@pytest.mark.parametrize("failing", [1, 2, 3])
def test_a_failed_champion_write_says_what_happened_and_the_files_agree(fresh_run, monkeypatch, failing):
    """A full disk (OSError) at each of the three writes of a promotion: pending entry, champion, done mark."""
    import errno

    results = fresh_run.parent.parent
    first, second = _report(fresh_run)["passed"][:2]
    assert promote(fresh_run, second).promoted
    before = load_champion(results, "BTCUSD", "1h")
    real, writes = record_files.atomic_write, []

    def disk_full(path: Path, text: str) -> None:
        writes.append(path.name)
        if len(writes) == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(record_files, "atomic_write", disk_full)
    with pytest.raises(ChampionWriteError) as caught:
        promote(fresh_run, first)
    monkeypatch.undo()
    message = str(caught.value)
    now = load_champion(results, "BTCUSD", "1h")
    history = load_history(results, "BTCUSD", "1h")
    if failing == 3:  # the champion was replaced: the message says so and the history lists it
        assert "the champion WAS replaced" in message and now["run"]["trial"] == first
        assert history[-1]["action"] == "promote" and history[-1]["state"] == "done" and history[-1]["champion"] == now
    else:
        assert now == before and ("nothing changed" in message or "was not replaced" in message)
        assert all(e["state"] != "pending" for e in history)
        assert [e["champion"]["run"]["trial"] for e in history if e["state"] == "done" and e["champion"]] == [second]
    assert "No space left on device" in message
    assert not list((results / "champions").glob("*.tmp"))
    # the next operation stores what the history showed, and works as usual
    assert _rollback(results).promoted if failing == 3 else promote(fresh_run, first).promoted
    assert all(e["state"] != "pending" for e in json.loads((results / "champions" / "BTCUSD_1h.history.json").read_text())["entries"])


def test_champion_cli_show_history_promote_rollback(fresh_run):
    results = fresh_run.parent.parent

    def genesis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = genesis("champion", "show", "--results-dir", str(results))
    assert missing.returncode == 2 and "no BTCUSD 1h champion" in missing.stderr
    none = genesis("champion", "history", "--results-dir", str(results))  # was an empty table, saying nothing of where it looked
    assert none.stdout.strip() == f"no BTCUSD 1h champion history at {results / 'champions' / 'BTCUSD_1h.history.json'} " \
        "(see `genesis champion promote`)"
    first, second = _report(fresh_run)["passed"][:2]
    assert genesis("champion", "promote", str(fresh_run), "--trial", str(second)).returncode == 0
    refused = genesis("champion", "promote", str(fresh_run), "--trial", str(first), "--min-improvement", "1000", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["promoted"] is False
    shown = genesis("champion", "show", "--results-dir", str(results), "--json")
    assert json.loads(shown.stdout)["run"]["trial"] == second
    table = genesis("champion", "history", "--results-dir", str(results))
    assert "promote" in table.stdout and "reject" in table.stdout and "min_improvement" in table.stdout
    assert genesis("champion", "rollback", "--results-dir", str(results)).returncode == 2  # the first champion


def test_a_validation_made_before_the_run_s_later_trials_promotes_nothing_until_made_again(tmp_path):
    """Explore 16 trials, validate, explore on to 40 (validation off), promote: the champion was
    taken from a report of the first 16, whose candidates and DSR (N = 16) were not the run's. Now
    promotion refuses, naming both counts, and records it; the report and `runs show` say so with the
    old table; validated again, it goes through the gates."""
    from genesis_core.optimizer import RunOptions
    from tests.runs import genesis, optimize, validate

    path = validated_config(tmp_path)
    run_dir = Path(optimize(path)["run_dir"])
    first = validate(run_dir)
    assert first["passed"] and first["evaluated_trials"] == len(list((run_dir / "trials").glob("*.json")))
    more = optimize(path, RunOptions(max_trials=40))
    evaluated = len(list((run_dir / "trials").glob("*.json")))  # an artifact for each trial backtested
    assert more["cache"]["total_trials"] == 40 and evaluated > first["evaluated_trials"]
    decision = promote(run_dir)
    assert not decision.promoted and decision.reason == (
        f"validation.json was made of {first['evaluated_trials']} evaluated trial(s), the run now has {evaluated}: its candidates "
        f"and deflated Sharpe ratio may not be this run's; run `genesis validate {run_dir}` again")
    assert load_history(tmp_path / "results", "BTCUSD", "1h")[-1]["reason"] == decision.reason
    assert load_champion(tmp_path / "results", "BTCUSD", "1h") is None
    assert genesis("report", str(run_dir)).returncode == 0  # its validation section says so above the old table
    said = f"{first['evaluated_trials']} evaluated trial(s), the run now has {evaluated}: <code>genesis validate</code> again"
    assert said in (run_dir / "report.html").read_text()
    shown = genesis("runs", "show", str(run_dir))  # and `runs show` under the old table
    assert shown.returncode == 0 and f"warning: validation.json was made of {first['evaluated_trials']} evaluated trial(s), the " \
        f"run now has {evaluated}: genesis validate {run_dir} again" in " ".join(shown.stderr.split())
    again = validate(run_dir)
    assert again["evaluated_trials"] == evaluated
    decision = promote(run_dir)
    assert decision.gates and decision.promoted == (again["best"] is not None and all(g.passed for g in decision.gates))
    assert genesis("report", str(run_dir)).returncode == 0 and "evaluated trial(s), the run now has" not in (run_dir / "report.html").read_text()


def test_a_validation_json_of_an_earlier_version_that_passed_a_window_resting_on_one_trade_promotes_nothing(tmp_path,
                                                                                                             monkeypatch):
    """A validation.json written before max_best_trade_share passed ``ONE_TRADE`` on 2023-H1, and
    promotion took that pass as it stood: the windows it re-runs to check that they reproduce were
    not judged again. Now the validated gate judges them as this version does."""
    from genesis_core.optimizer import SweepOptions, sweep
    from genesis_core.validation import _validate
    from tests.optimizer.test_optimizer import write_config
    from tests.runs import validate
    from tests.validation.conftest import FIRST_HALF_2023, GATES_OFF, ONE_TRADE

    reference = load_study_config(ROOT / "configs" / "optimize_reference.yaml").validation
    path = write_config(tmp_path, meta={"sample_start": "2022-01-01", "sample_end": "2022-12-31"}, promotion=GATES_OFF,
                        parameters={k: {"type": "categorical", "choices": [v]} for k, v in ONE_TRADE.items()},
                        validation={"enabled": True, "top_n": 1, "windows": [FIRST_HALF_2023],
                                    "constraints": reference.constraints.model_dump()})
    sweep(load_study_config(path).spec(), SweepOptions("grid"), points=[ONE_TRADE])
    run_dir = tmp_path / "results" / "runs" / "t"
    with monkeypatch.context() as earlier:
        earlier.setattr(_validate, "one_trade", lambda result, limit: None)  # the checks before max_best_trade_share
        assert validate(run_dir)["passed"] == [0]

    decision = promote(run_dir)
    gates = {g.name: g for g in decision.gates}
    assert not decision.promoted and not gates["validated"].passed and gates["reproduces"].passed
    assert gates["validated"].detail.startswith(
        "failed validation as this version judges it (validation.json, of an earlier version, says passed): 2023-01-01..2023-06-30: "
        "max_best_trade_share: 1.02 > 0.5 (one trade, entered 2023-03-22T20:00:00Z, made ")
    assert load_history(tmp_path / "results", "BTCUSD", "1h")[-1]["reason"].startswith(f"validated: {gates['validated'].detail}")
    assert load_champion(tmp_path / "results", "BTCUSD", "1h") is None
    assert validate(run_dir)["passed"] == []  # validated again, it fails there too


def _champion_with_a_bug_then_a_run_on_2023(tmp_path: Path, bug: str) -> Path:
    """A champion of the misbehaving strategy with ``bug``, validated and promoted on 2022's bars,
    then a run validated on 2023's, whose folder this returns."""
    import yaml

    from genesis_core.optimizer import SweepOptions, sweep
    from tests.optimizer.test_optimizer import write_config
    from tests.runs import validate
    from tests.validation.conftest import GATES_OFF, VALIDATION

    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {}}))
    loose = {"min_trades": 1, "min_profit_factor": 0.0, "max_drawdown": 0.9}
    space = {"bug": {"type": "categorical", "choices": ["none", bug]}, "period": {"type": "int", "low": 10, "high": 40, "step": 10}}

    def run(name: str, window: dict, point: dict) -> Path:
        path = write_config(tmp_path, f"{name}.yaml", meta={"base_config": str(base), "study_name": name}, parameters=space,
                            constraints=loose, validation={**VALIDATION, "windows": [window], "constraints": loose},
                            promotion=GATES_OFF)
        sweep(load_study_config(path).spec(), SweepOptions("grid"), points=[point])
        run_dir = tmp_path / "results" / "runs" / name
        assert validate(run_dir)["passed"] == [0]
        return run_dir

    first = run("first", {"start": "2022-06-01", "end": "2022-08-31"}, {"bug": bug, "period": 30})
    assert promote(first).promoted
    return run("second", {"start": "2023-01-01", "end": "2023-03-31"}, {"bug": "none", "period": 10})


def test_a_champion_that_cannot_trade_the_new_windows_has_no_score_to_beat(tmp_path):
    """The champion's strategy raises on 2023's bars (a plugin's bug for some parameters); a later
    run validated on 2023 asked for its score there to compare, and promotion ended with the
    exception, recording nothing. Now the improves gate says why there is no comparison and the
    candidate, validated, is promoted; the history has it."""
    second = _champion_with_a_bug_then_a_run_on_2023(tmp_path, "raises on 2023")
    decision = promote(second)
    improves = next(g for g in decision.gates if g.name == "improves")
    assert improves.passed and improves.detail.startswith("validation score ") and (
        "; the champion cannot be re-run on the same windows: refused on the validation window 2023-01-01..2023-03-31: strategy "
        "'tests.strategy.misbehaving_strategy:Misbehaving' raised ZeroDivisionError: division by zero at ") in improves.detail
    assert decision.promoted and load_champion(tmp_path / "results", "BTCUSD", "1h")["run"]["study"] == "second"
    assert [e["action"] for e in load_history(tmp_path / "results", "BTCUSD", "1h")] == ["promote", "promote"]


def test_a_champion_that_crashes_promotion_s_process_on_the_new_windows_has_no_score_to_beat(tmp_path):
    """The champion's compiled code crashes on 2023's bars: promoting a run validated on 2023 died of
    SIGSEGV as the champion was re-run there to compare, and so did every later promotion. Now the
    gates' backtests run in a process of their own: the promotion goes on as for a champion that
    refuses the window (no score to beat, the candidate promoted), and records the crash."""
    from tests.optimizer.test_accounting import _crash_dump
    from tests.runs import genesis_apart
    from tests.validation.test_validation import CRASHED

    second = _champion_with_a_bug_then_a_run_on_2023(tmp_path, "crashes on 2023")
    done = genesis_apart("champion", "promote", str(second), "--json")
    assert done.returncode == 0 and _crash_dump(done.stderr), done.stderr[-3000:]
    assert done.stderr.count("Fatal Python error") == 1
    improves = next(g for g in json.loads(done.stdout)["gates"] if g["name"] == "improves")
    assert improves["passed"] and improves["detail"].startswith("validation score ") and improves["detail"].endswith(
        "; the champion cannot be re-run on the same windows: refused on the validation window 2023-01-01..2023-03-31: "
        + CRASHED.format("promotion")), improves
    assert load_champion(tmp_path / "results", "BTCUSD", "1h")["run"]["study"] == "second"
    assert [e["action"] for e in load_history(tmp_path / "results", "BTCUSD", "1h")] == ["promote", "promote"]
    assert list(json.loads((second / "crashes.json").read_text()).values()) == [CRASHED.format("promotion")]


def test_the_champion_is_scored_on_the_candidate_s_data_whatever_its_own_workdir_holds(tmp_path, monkeypatch):
    """The improves gate re-runs the champion on the candidate's data file. Given as the candidate's
    relative path, the champion's config read it from the champion's own workdir first: a champion
    promoted in another project, whose data/c.csv.gz is another market's, was scored on that."""
    import shutil

    from tests.runs import optimize, validate

    project, other = tmp_path / "project", tmp_path / "other"
    (project / "data").mkdir(parents=True)
    (other / "data").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", project / "data" / "c.csv.gz")
    shutil.copy(ROOT / "data" / "BTCUSDT_1h_binance.csv.gz", other / "data" / "c.csv.gz")  # the same name, another market
    monkeypatch.chdir(project)
    run = Path(optimize(validated_config(project, meta={"data": "data/c.csv.gz", "results_dir": "results"}))["run_dir"])
    validate(run)
    first, second = _report(run)["passed"][:2]
    assert promote(run, second).promoted
    store = ChampionStore(project / "results", "BTCUSD", "1h")
    champion = json.loads(store.path.read_text())
    assert champion["effective_config"]["workdir"] == str(project)
    champion["effective_config"]["workdir"] = str(other)  # as promoted there
    store.path.write_text(json.dumps(champion))
    improves = next(g for g in promote(run, first, min_improvement=1e9).gates if g.name == "improves")
    theirs = next(c["validation_score"] for c in _report(run)["candidates"] if c["trial"] == second)
    assert f" vs champion {theirs:.4f} on the same windows" in improves.detail, improves.detail
