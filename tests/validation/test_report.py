"""`genesis report RUN`: one self-contained HTML file, opened in a real headless browser (Debian's
chromium, installed by scripts/ensure-package.sh): every plot rendered, no JavaScript error, and
the figures and tables say what the run's files hold."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import figure_data, render, rendered_figures
from tests.conftest import held_in_file
from tests.optimizer.test_optimizer import ROOT
from tests.runs import promote
from tests.validation.conftest import VALIDATION

FIGURES = 6  # history, importances, parameters, and equity/drawdown on the explore window and the 2 validation windows


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
    return render(report[0])


def test_the_report_is_self_contained_and_every_plot_renders_without_a_javascript_error(report, rendered):
    page, _ = report
    text = page.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # no CDN: the JavaScript is in the file
    assert text.count("plotly.js v") == 1  # Plotly's bundle, embedded once
    dom, console = rendered
    figures = rendered_figures(dom)
    assert len(figures) == FIGURES
    for number, body in figures.items():
        assert 'class="main-svg"' in body, f"figure {number} did not render"
    assert not console, console


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
    # the validation table as `genesis validate` prints it: percentages, the profit factor, a plateau's two shares
    for candidate in validation["candidates"]:
        e, r = candidate["explore"], candidate["robustness"]
        m = e["metrics"]
        plateau = "-" if r is None or r["plateau"] is None else f"{r['plateau']:.0%} ({r['worst']:.0%})" + (" peak" if r["flagged"] else "")
        verdict = "pass" if candidate["passed"] else "fail"
        peak = ' class="fail"' if r and r["flagged"] else ""  # in red
        assert (f'<tr class="group"><td class="l">#{candidate["trial"]}</td><td class="l">explore</td><td>{e["production_score"]:.2f}</td>'
                f'<td>{m["total_return"]:+.2%}</td><td>{m["max_drawdown"]:.2%}</td><td>{m["profit_factor"]:.2f}</td>'
                f'<td>{m["num_trades"]}</td><td>{candidate["validation_score"]:.2f}</td>'
                f'<td{peak}>{plateau}</td>'
                f'<td class="{verdict}">{verdict}</td></tr>') in dom
        for w in candidate["windows"]:
            m, verdict = w["metrics"], "pass" if w["passed"] else "fail"
            assert (f'<tr><td class="l"></td><td class="l">{w["start"]} .. {w["end"]}</td><td>{w["production_score"]:.2f}</td>'
                    f'<td>{m["total_return"]:+.2%}</td><td>{m["max_drawdown"]:.2%}</td><td>{m["profit_factor"]:.2f}</td>'
                    f'<td>{m["num_trades"]}</td><td></td><td></td><td class="{verdict}">{verdict}</td></tr>') in dom
            assert all(f"<li>#{candidate['trial']} {html.escape(reason)}</li>" in dom for reason in candidate["reasons"])
    for i, (label, made) in enumerate(validation["buy_and_hold"].items()):  # above them, what holding each window made
        row = "tr class=\"group\"" if i == 0 else "tr"
        assert (f'<{row}><td class="l">{"market" if i == 0 else ""}</td><td class="l">{label.replace("..", " .. ")}</td><td></td>'
                f'<td>{made:+.2%}</td>' + "<td></td>" * 6 + "</tr>") in dom
    dsr = validation["overfitting"]["deflated_sharpe"]
    assert f"deflated Sharpe ratio of trial {dsr['trial']}: {dsr['dsr']:.3f}" in dom
    assert f"probability of backtest overfitting: {validation['overfitting']['pbo']['pbo']:.3f}" in dom
    champion = json.loads((run_dir.parent.parent / "champions" / "BTCUSD_1h.json").read_text())
    assert dom.count(f"champion {champion['config_fingerprint'][:8]}") >= 3  # a curve in every window's legend
    # beside the equity on each window, buying and holding it, from the first bar's open to the last close
    text = report[0].read_text()
    for number, (start, end) in zip((4, 5, 6), [("2022-03-01", "2022-05-31")] + [(w["start"], w["end"]) for w in VALIDATION["windows"]],
                                    strict=True):
        (held,) = [t for t in figure_data(text, number) if t["name"] == "buy and hold"]
        assert held["y"] == pytest.approx(list(10_000.0 * held_in_file(start, end)), rel=1e-12)


def test_the_importances_are_optunas_over_the_study_though_the_page_reads_only_the_run_folder(report, rendered):
    """Drawn from trials.csv (so a page can be made wherever the folder is), they equal Optuna's
    PED-ANOVA over the stored study itself. Drawn from the top 2 of 16 trials, they say that they
    are mostly chance: the bars alone read as findings."""
    import optuna

    from genesis_core.optimizer import open_storage

    page, run_dir = report
    run = json.loads((run_dir / "run.json").read_text())
    study = optuna.load_study(study_name=run["study_name"], storage=open_storage(run["storage"]))
    expected = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    (bars,) = figure_data(page.read_text(), 2)
    assert dict(zip(bars["y"], bars["x"], strict=True)) == expected and len(expected) == len(run["config"]["parameters"])
    scored = len([t for t in study.trials if t.state.name == "COMPLETE"])
    assert f"the top 10% is {math.ceil(scored / 10)} of {scored} trials: with so few, the bars are mostly chance" in rendered[0]


def test_the_importances_of_a_large_run_are_of_trials_drawn_at_random_and_say_so(report, monkeypatch):
    """Optuna copies each trial it is given: a 163,000-point sweep's page took 24 s for its importances
    alone. Over ``IMPORTANCE_TRIALS`` (here 10 of the 16) they are of that many trials drawn at
    random, the same each time, and the figure says so."""
    import random

    import optuna

    from genesis_core import report as report_module
    from genesis_core.optimizer import SearchSpace
    from genesis_core.records import RunFolder
    from genesis_core.study import load_run

    folder = RunFolder(report[1])
    rows, (_, cfg) = folder.read_trials_table(), load_run(folder)
    space = SearchSpace(cfg)
    done = [r for r in rows if r.state == "COMPLETE" and r.production_score is not None]
    monkeypatch.setattr(report_module, "IMPORTANCE_TRIALS", 10)
    fig = report_module._importances(rows, space)
    assert len(done) == 16 and fig.to_json() == report_module._importances(rows, space).to_json()
    assert "of 10 of the 16 completed trials, drawn at random" in fig.layout.title.text
    study = optuna.create_study(direction="maximize")
    drawn = sorted(random.Random(0).sample(done, 10), key=lambda r: r.number)
    study.add_trials([optuna.trial.create_trial(params={p: space.held(p, r.params[p]) for p in space.distributions},
                                                distributions=dict(space.distributions), value=r.production_score) for r in drawn])
    expected = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert dict(zip(fig.data[0].y, fig.data[0].x, strict=True)) == expected
    monkeypatch.setattr(report_module, "IMPORTANCE_TRIALS", 16)  # all of them: nothing said
    assert "drawn at random" not in report_module._importances(rows, space).layout.title.text


def test_a_large_run_s_page_draws_its_history_by_webgl_and_its_best_trials_in_parallel_coordinates(report, monkeypatch, tmp_path):
    """A 172,800-point sweep's page took a browser 41 s to show: 31 s for as many lines of parallel
    coordinates (a blur), 8 s for as many SVG markers of its history. Over ``GL_POINTS`` completed
    trials (here 10 of the 16) the history is drawn by WebGL; over ``PARALLEL_TRIALS`` (here 10)
    the lines are the ``PARALLEL_BEST`` (here 3) best and the rest drawn at random, the same each
    time, as the title says. The best so far is a step at each trial where it rose, and still reads
    the best of the trials up to each one."""
    from genesis_core import report as report_module
    from genesis_core.records import RunFolder

    folder = RunFolder(report[1])
    rows = folder.read_trials_table()
    done = [r for r in rows if r.state == "COMPLETE" and r.production_score is not None]
    valid = [r for r in done if r.outcome == "VALID"]
    assert len(done) == 16 and len(valid) > 10
    for name, value in (("GL_POINTS", 10), ("PARALLEL_TRIALS", 10), ("PARALLEL_BEST", 3)):
        monkeypatch.setattr(report_module, name, value)
    history = report_module._history(rows)
    *markers, best = history.data
    assert {t.type for t in markers} == {"scattergl"} and sum(len(t.x) for t in markers) == 16
    assert best.type == "scatter" and best.line.shape == "hv" and best.x[-1] == done[-1].number
    steps = dict(zip(best.x, best.y, strict=True))
    so_far = -math.inf
    for r in done:  # the step drawn at each trial, the last one at or before it, is the best up to it
        so_far = max(so_far, r.production_score or -math.inf)
        assert steps[max(x for x in best.x if x <= r.number)] == so_far
    parallel = report_module._parallel(rows)
    assert parallel.to_json() == report_module._parallel(rows).to_json()
    assert (f"10 of the {len(valid)}: the 3 best and 7 drawn at random"
            in parallel.layout.title.text)
    drawn = list(parallel.data[0].line.color)
    ranked = sorted((r.production_score for r in valid), reverse=True)
    assert len(drawn) == 10 and drawn[:3] == ranked[:3] and all(score in ranked for score in drawn)
    monkeypatch.setattr(report_module, "PARALLEL_TRIALS", len(valid))  # all of them: nothing said
    assert "drawn at random" not in report_module._parallel(rows).layout.title.text
    monkeypatch.setattr(report_module, "PARALLEL_TRIALS", 10)
    page = tmp_path / "large.html"
    page.write_text(report_module.run_report(folder))
    dom, console = render(page)
    figures = rendered_figures(dom)
    assert len(figures) == FIGURES and not console, console
    assert all('class="main-svg"' in body for body in figures.values())
    assert "<canvas" in figures["1"] and 'class="point"' not in figures["1"]  # the markers on a WebGL canvas


def test_the_summary_counts_as_the_command_line_does(report, tmp_path):
    """A 163,000-point sweep's page said `163000 COMPLETE` where `runs show` says 163,000."""
    from genesis_core.records import RunFolder
    from genesis_core.report import run_report

    copy = tmp_path / "results" / "runs" / "t"
    shutil.copytree(report[1], copy)
    run = json.loads((copy / "run.json").read_text())
    run["cache"] |= {"total_trials": 163_000, "unique_backtests": 162_000, "cache_hits": 1_000}
    run["states"], run["outcomes"] = {"COMPLETE": 163_000}, {"VALID": 161_000, "DUPLICATE": 2_000}
    (copy / "run.json").write_text(json.dumps(run))
    page = run_report(RunFolder(copy))
    for label, shown in (("trials", "163,000"), ("states", "163,000 COMPLETE"), ("outcomes", "161,000 VALID, 2,000 DUPLICATE"),
                         ("duplicates answered from the cache", f"1,000 ({run['cache']['hit_rate']:.1%})"), ("backtests run", "162,000")):
        assert f"<td class='l'>{label}</td><td>{shown}</td>" in page, label


def test_a_report_the_disk_cannot_hold_is_one_line_naming_the_file_and_leaves_no_piece(fresh_run, tmp_path):
    """`genesis report` on a disk that cannot take the page (a file size limit: the kernel cuts the
    write short, then refuses it, as on a full disk): one line naming the file and why, exit 2, no
    traceback; neither the page nor a piece of it is left. With room again it is written."""
    out = tmp_path / "report.html"
    code = ("import resource, signal, sys\n"
            "from genesis_core.cli import app\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))\n"
            "app(sys.argv[1:], prog_name='genesis')\n")
    proc = subprocess.run([sys.executable, "-c", code, "report", str(fresh_run), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {out}: File too large" and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no page, no temporary
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "report", str(fresh_run), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.stat().st_size > 100_000, proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_report_stopped_by_a_signal_says_what_became_of_the_page_and_leaves_no_piece(fresh_run, tmp_path, sig):
    """Ctrl-C during `genesis report` ended it without a word (exit 130), and SIGTERM killed it, which
    could leave the page's temporary file beside it. Stopped as the page is flushed to disk: one
    line, exit 128 + the signal, the page as it was (SIGINT: one was there) or not written (SIGTERM),
    nothing else in its folder; the same command then writes it."""
    from tests.runs import genesis, genesis_killed_after

    page = tmp_path / "report.html"
    if sig == signal.SIGINT:
        page.write_text("an earlier page")
    before = sorted(p.name for p in tmp_path.iterdir())
    stopped = genesis_killed_after("genesis_core.files:os.fsync", 1, "report", str(fresh_run), "--out", str(page), sig=sig)
    kept = "is as it was" if sig == signal.SIGINT else "was not written"
    assert (stopped.returncode, stopped.stderr) == (128 + sig, f"interrupted: {page} {kept}; run the same command again to write it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary beside it
    assert page.read_text() == "an earlier page" if sig == signal.SIGINT else not page.exists()
    again = genesis("report", str(fresh_run), "--out", str(page))
    assert again.returncode == 0 and page.stat().st_size > 100_000


def test_a_parameter_s_axis_is_named_by_its_last_parts_from_a_name_on_and_no_two_alike():
    """The searched parameters' axes: ``risk.risk_map.0.1`` (an element of a list, as the bundled
    optimizer config searches) was labelled ``0.1``, beside its axis's tick 0.1; two paths ending
    alike were labelled alike."""
    from genesis_core.report import _short

    paths = ["risk.risk_map.0.1", "thresholds.signal_adaptation.zones.low.entry_conf_overall", "a.x.y", "b.x.y",
             "exits.stop_loss_atr", "fast", "m.0"]
    assert _short(paths) == {"risk.risk_map.0.1": "risk_map.0.1", "thresholds.signal_adaptation.zones.low.entry_conf_overall":
                             "low.entry_conf_overall", "a.x.y": "a.x.y", "b.x.y": "b.x.y", "exits.stop_loss_atr": "exits.stop_loss_atr",
                             "fast": "fast", "m.0": "m.0"}
