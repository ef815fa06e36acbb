from __future__ import annotations

import html
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genesis_core.errors import ConfigError
from genesis_core.records import RunFolder
from genesis_core.validation import check_equivalence
from tests.optimizer.test_optimizer import ROOT, _trials, write_config
from tests.runs import genesis, optimize


@pytest.fixture(scope="module")
def explored(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("eq")
    path = write_config(tmp, meta={"stop": {"max_trials": 8}}, parameters={
        "exits.max_bars_held": {"type": "categorical", "choices": [12, 24]},  # 8 trials must repeat one
        "thresholds.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.6},  # inert: zones override it
    })
    return optimize(path)


@pytest.fixture(scope="module")
def run_dir(explored) -> Path:
    return Path(explored["run_dir"])


def test_every_trial_reproduces_from_its_artifact(run_dir):
    results = check_equivalence(RunFolder(run_dir))
    assert len(results) == len(list((run_dir / "trials").glob("*.json"))) >= 5
    assert all(r.ok for r in results), [r.differences for r in results if not r.ok]


def test_a_corrupted_artifact_is_detected_with_exit_code_1(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    first = sorted((copy / "trials").glob("*.json"))[0]
    artifact = json.loads(first.read_text())
    artifact["effective_config"]["params"]["exits"]["stop_loss_atr"] = 3.3  # edited config, fingerprint kept
    artifact["metrics"]["sharpe"] = 9.99  # and a doctored metric
    first.write_text(json.dumps(artifact))
    (bad,) = [r for r in check_equivalence(RunFolder(copy)) if not r.ok]
    assert bad.trial == artifact["trial_number"]
    assert any(d.startswith("fingerprints.config: stored") for d in bad.differences)
    assert any(d.startswith("metrics.sharpe: stored 9.99") for d in bad.differences)
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "check-equivalence", str(copy), "--all"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "metrics.sharpe" in proc.stdout
    total = len(check_equivalence(RunFolder(copy)))
    assert f"re-run from artifacts: {total - 1} of {total} identical" in proc.stdout
    assert proc.stdout.count("OK") == 0  # only the trial that differs is listed ...
    verbose = subprocess.run([sys.executable, "-m", "genesis_core", "check-equivalence", str(copy), "--all", "--verbose"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert verbose.stdout.count("OK") == total - 1  # ... unless asked for all
    ok = subprocess.run([sys.executable, "-m", "genesis_core", "check-equivalence", str(run_dir), "--trial", "0", "--json"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout) == [{"trial": 0, "ok": True, "differences": []}]


def test_identical_outcomes_of_different_configs_are_recorded_and_the_parameter_they_differ_in_named(explored, run_dir):
    """The searched top-level threshold is overridden by the zones: configs differ, outcomes do not;
    the warning names that threshold, which each pair differs in, and not the limit they share."""
    rows = [r for r in _trials({"run_dir": str(run_dir)}) if r["cached"] == "False"]
    by_hold: dict[str, list[dict]] = {}
    for r in rows:
        by_hold.setdefault(r["param:exits.max_bars_held"], []).append(r)
    repeats = [group for group in by_hold.values() if len(group) > 1]
    assert repeats
    for group in repeats:
        assert all(r["same_outcome_as"] == group[0]["number"] for r in group[1:])
    run = json.loads((run_dir / "run.json").read_text())
    n = sum(len(g) - 1 for g in repeats)
    assert run["identical_outcomes"] == n
    line = (f"{n} evaluated trial(s) gave exactly the metrics of an earlier, different config (trials.csv: same_outcome_as): "
            f"some searched parameter may change nothing; the pairs differ in thresholds.entry_conf_overall (all {n})")
    assert line in explored["warnings"]
    shown = genesis("runs", "show", str(run_dir))  # told again where the run is looked at, read from trials.csv
    assert shown.returncode == 0 and f"warning: {line}" in " ".join(shown.stderr.split())
    page = run_dir.parent / "page.html"
    assert genesis("report", str(run_dir), "--out", str(page)).returncode == 0
    assert f"<p class='note'>{html.escape(line)}</p>" in page.read_text().split("<h2>Read with care</h2>")[1].split("<h2>")[0]


def test_unknown_runs_and_trials_are_clear_errors(run_dir):
    with pytest.raises(ConfigError, match="no run at nowhere"):
        RunFolder.find("nowhere")
    with pytest.raises(ConfigError, match="no artifact for trial"):
        check_equivalence(RunFolder(run_dir), [999])


def test_identical_outcomes_are_told_apart_exactly_as_their_canonical_json():
    """Two trials' metrics count as the same outcome exactly when their canonical JSON is the same:
    0.0 and -0.0 alike, 1 and 1.0 apart, None apart from 0, a missing metric apart from a None one."""
    import itertools

    from genesis_core.fingerprint import canonical_json
    from genesis_core.optimizer._results import _metrics_key

    values = [0.0, -0.0, 1, 1.0, None, 0, 0.1, 0.1 + 1e-17, 0.30000000000000004, 0.3, 12]
    dicts = [{"sharpe": a, "num_trades": b} for a, b in itertools.product(values, [12, 12.0, 3])]
    dicts += [{"sharpe": None}, {"num_trades": 12}, {}]
    for a, b in itertools.product(dicts, repeat=2):
        assert (_metrics_key(a) == _metrics_key(b)) == (canonical_json(a) == canonical_json(b)), (a, b)


def test_new_bars_after_the_window_change_nothing_and_changed_bars_in_it_are_said_first(tmp_path):
    """`genesis data update` appends the exchange's new bars to the file a run was made on: every
    trial then "differed" by the file's fingerprint alone (0 of N identical, exit 1), and promotion's
    reproduces gate refused the run's candidates, though every number re-ran exactly. Now the bars
    a trial read (its data window) are compared, not the file; a bar changed inside the window is
    said first, before the differences that follow from it.

    A bar changed inside the window also made validation rank candidates by their explore scores of
    the old bars while it measured their plateaus (against those scores), deflated Sharpe ratios and
    PBO on re-runs on the new ones, without a word; it is refused now, naming the trial, and nothing
    is written. `backtest --trial`, `--champion` and of a result file, and the report's curves (on
    the explore window, and on a validation window whose bars changed since validation), say their
    numbers are of other bars than the stored ones."""
    import gzip

    from tests.runs import promote, validate
    from tests.validation.conftest import validated_config

    data = tmp_path / "btc.csv.gz"
    lines = gzip.open(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "rt").read().splitlines()
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    run_dir = Path(optimize(validated_config(tmp_path, meta={"data": str(data)}))["run_dir"])
    validate(run_dir)
    data.write_bytes(gzip.compress(("\n".join([*lines, "2024-01-16T16:00:00Z,43000.0,43100.0,42900.0,43050.0,12.5"]) + "\n").encode()))
    results = check_equivalence(RunFolder(run_dir))
    assert len(results) >= 10 and all(r.ok for r in results), [r.differences for r in results if not r.ok][:1]
    decision = promote(run_dir)
    assert next(g for g in decision.gates if g.name == "reproduces").passed, decision.gates
    candidates = [c["trial"] for c in validate(run_dir)["candidates"]]  # new bars after the window: validated as before
    at = next(i for i, line in enumerate(lines) if line.startswith("2022-04-01T05:00:00Z"))  # inside the explore window
    t, o, h, low, c, v = lines[at].split(",")
    lines[at] = ",".join([t, o, str(float(h) * 1.05), low, c, v])
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    changed = check_equivalence(RunFolder(run_dir))
    assert changed and all(not r.ok for r in changed)
    assert all(r.differences[0] == f"the bars of its window in {data} are not those it ran on (the file was changed or "
               "replaced): what differs below may all follow from that" for r in changed)
    assert all(any(d.startswith("fingerprints.data_window: stored") for d in r.differences) for r in changed)
    said = f"the bars of its window in {data} are not those it ran on (the file was changed or replaced)"
    validated = (run_dir / "validation.json").read_bytes()
    refused = genesis("validate", str(run_dir))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    number = int(refused.stderr.split()[2].rstrip(":"))
    assert number in candidates and " ".join(refused.stderr.split()) == (
        f"error: trial {number}: {said}: validation would rank it by a score of other bars than those it re-runs it on for its "
        "plateau, deflated Sharpe ratio and PBO. Restore the file the run read, or explore these bars in a study of their own "
        "(another meta.study_name)")
    assert (run_dir / "validation.json").read_bytes() == validated
    best = run_dir / "best_trial.json"
    for args, who in [(["--trial", f"{run_dir}:{number}"], f"trial {run_dir}:{number}"), ([str(best)], str(best)),
                      (["--champion", "--results-dir", str(run_dir.parent.parent)], "the champion")]:
        rerun = genesis("backtest", *args, "--out", str(tmp_path / "b.json"))
        assert rerun.returncode == 0 and f"warning: {who}: {said}: the numbers here are of the bars there now, not its stored " \
            "ones" in " ".join(rerun.stderr.split()), rerun.stderr
    assert genesis("backtest", "--trial", f"{run_dir}:{number}", "--start", "2022-03-01").stderr.count("changed or replaced") == 0
    shown = ", ".join(map(str, candidates[:5]))  # the curves drawn: report.CURVES
    explore = f"trials {shown}, each: {said}: their curves there are of the bars now, not of those they scored on"
    july = f"trials {shown}, on validation window 2022-06-01..2022-08-31, each: {said}: their curves there are of the bars now, " \
           "not of those they scored on"
    assert genesis("report", str(run_dir)).returncode == 0
    cautions = (run_dir / "report.html").read_text().split("<h2>Read with care</h2>")[1].split("<h2>")[0]
    assert html.escape(explore) in cautions and "validation window" not in cautions
    at = next(i for i, line in enumerate(lines) if line.startswith("2022-07-01T05:00:00Z"))  # and one in the first validation window
    t, o, h, low, c, v = lines[at].split(",")
    lines[at] = ",".join([t, o, str(float(h) * 1.05), low, c, v])
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert genesis("report", str(run_dir)).returncode == 0
    cautions = (run_dir / "report.html").read_text().split("<h2>Read with care</h2>")[1].split("<h2>")[0]
    assert html.escape(explore) in cautions and html.escape(july) in cautions and "2022-09-01" not in cautions


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_check_stopped_by_a_signal_says_what_the_trials_re_run_before_it_gave_and_writes_nothing(run_dir, tmp_path, sig):
    """Ctrl-C during `genesis check-equivalence` ended it without a word (exit 130), and SIGTERM
    killed it; then it said that no trial is reported until all are re-run, where a 163,000-point
    sweep's check takes minutes. Stopped as its second trial ends (that one not counted): one line
    with how many were re-run and which of them differ, exit 128 + the signal, the run folder as it
    was. Stopped as its third ends, after a doctored second: that one is named."""
    import shutil

    from tests.runs import genesis_killed_after

    def stopped(folder: Path, calls: int):
        return genesis_killed_after("genesis_core.validation._equivalence:check_trial", calls, "check-equivalence", str(folder),
                                    "--all", sig=sig)

    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = stopped(run_dir, 2)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        128 + sig, "", "interrupted after re-running 1 trial(s): all identical so far; nothing was written: run the same "
                       "command again to check them all\n")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    second = sorted((copy / "trials").glob("*.json"))[1]
    artifact = json.loads(second.read_text())
    artifact["metrics"]["sharpe"] = 9.99
    second.write_text(json.dumps(artifact))
    assert stopped(copy, 3).stderr == (f"interrupted after re-running 2 trial(s): 1 differ (#{artifact['trial_number']}); nothing "
                                       "was written: run the same command again to check them all\n")


def test_the_parameters_that_pairs_of_identical_outcomes_differ_in_are_counted_most_often_first():
    from genesis_core.optimizer._results import SHOWN_DIFFERING, same_outcome_warning

    names = [f"p{i}" for i in range(SHOWN_DIFFERING + 2)]
    params = [dict.fromkeys(names, 0.0), {**dict.fromkeys(names, 0.0), "p3": 1.0}, {**dict.fromkeys(names, 1.0), "p3": 0.0},
              dict.fromkeys(names, 0.0)]

    def rows(same: dict[int, int]) -> list[dict]:
        return [{"number": n, "params": p, "same_outcome_as": same.get(n)} for n, p in enumerate(params)]

    head = ("evaluated trial(s) gave exactly the metrics of an earlier, different config (trials.csv: same_outcome_as): some "
            "searched parameter may change nothing; the pairs differ in ")
    # 1 differs from 0 in p3; 2 from 1 in every parameter; 3 from 0 in none (its fixed config changed)
    assert same_outcome_warning(rows({1: 0, 2: 1, 3: 0})) == (
        f"3 {head}p3 (2 of 3), p0 (1 of 3), p1 (1 of 3), p2 (1 of 3), p4 (1 of 3) and 3 more")
    assert same_outcome_warning(rows({1: 0})) == f"1 {head}p3 (all 1)"
    assert same_outcome_warning(rows({})) is None
