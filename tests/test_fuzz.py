"""Property-based fuzzing of what users hand the CLI: real candle files and configs, mutated
(cut, repeated and swapped lines, non-finite and huge values, other encodings, duplicate keys
and columns, stray bytes). Whatever the input, ``genesis`` either succeeds and prints strict
JSON, or exits 2 with one line on stderr, no traceback, and nothing written.

The examples are derandomized, so CI runs the same ones every time; set GENESIS_FUZZ_EXAMPLES
to search longer (e.g. 2000) when changing the loaders.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genesis_core.cli import app
from tests.conftest import SAMPLE_FILE

EXAMPLES = int(os.environ.get("GENESIS_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
CANDLES = gzip.open(SAMPLE_FILE, "rt").read().splitlines()
CONFIG = {"strategy": "sma_cross", "params": {"fast": 10, "slow": 20, "size": 1.0},
          "costs": {"fee_bps": 10, "slippage_bps": 5, "initial_equity": 10000}}
ODD_VALUES = ["nan", "inf", "-inf", "", "1e400", "-1", "0", "5.7e-306", "9" * 400, "true", "'10'", "[1, 2]",
              "{a: 1}", "null", "2022-13-45", "9999-01-01T00:00:00Z", "1e20", "x\u00e9\u4e2d", "\x00", ".nan", ".inf"]


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def _mutate_lines(draw: st.DrawFn, lines: list[str], odd_cell: bool) -> list[str]:
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "repeat", "swap", "value", "drop", "column", "garbage"]))
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        if op == "cut":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        elif op == "repeat":
            lines.insert(i, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "value" and odd_cell:
            cells = lines[i].split(",")
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(ODD_VALUES))
            lines[i] = ",".join(cells)
        elif op == "value":  # a YAML line: its value replaced, or the line repeated as a duplicate key
            key, sep, _ = lines[i].partition(":")
            lines[i] = f"{key}{sep} {draw(st.sampled_from(ODD_VALUES))}" if sep else lines[i]
        elif op == "drop":
            del lines[i]
        elif op == "column" and odd_cell:
            name = draw(st.sampled_from(["close", "open", "timestamp", "Volume", "extra"]))
            lines = [f"{line},{name if k == 0 else '1'}" for k, line in enumerate(lines)]
        elif op == "garbage":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.text(max_size=8)) + lines[i][pos:]
        if not lines:
            lines = [""]
    return lines


def _encode(draw: st.DrawFn, text: str) -> bytes:
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def _invoke(args: list[str], where: Path) -> tuple[int, str, str, object]:
    before = sorted(p.name for p in where.iterdir())
    result = CliRunner().invoke(app, args, catch_exceptions=True)
    if result.exit_code != 0:
        assert sorted(p.name for p in where.iterdir()) == before, "a failed command wrote a file"
    return result.exit_code, result.stdout, result.stderr, result.exception


def _assert_clean(code: int, stdout: str, stderr: str, exception: object) -> None:
    assert exception is None or isinstance(exception, SystemExit), f"crashed: {exception!r}\n{stderr}"
    assert "Traceback" not in stderr
    if code == 0:
        _strict(stdout)
    else:
        assert code == 2, stderr
        first, *more = stderr.strip().splitlines()  # one line; several problems of one config, one line each
        assert first.startswith("error: ") and len(first) < 1000, stderr
        assert not more or (first == "error: invalid configuration:" and all(m.startswith("  ") and len(m) < 1000 for m in more)), stderr


def _backtest_is_clean(config: Path, where: Path) -> None:
    """``genesis backtest`` of ``config``: clean, and on success the file written is what was printed."""
    out = where / "r.json"
    code, stdout, stderr, exc = _invoke(["backtest", "-c", str(config), "--out", str(out), "--json"], where)
    _assert_clean(code, stdout, stderr, exc)
    if code == 0:
        assert _strict(out.read_text()) == _strict(stdout)
        out.unlink()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the feature cache and default outputs land here
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


@FUZZ
@given(data=st.data())
def test_mutated_candle_files_succeed_or_exit_2_in_one_line(data, in_tmp):
    lines = _mutate_lines(data.draw, CANDLES, odd_cell=True)
    raw = _encode(data.draw, "\n".join(lines) + "\n")
    gz = data.draw(st.booleans())
    path = in_tmp.parent / ("c.csv.gz" if gz else "c.csv")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    config = in_tmp.parent / "sma.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "data": {"path": str(path)}}))
    _assert_clean(*_invoke(["data", "check", str(path), "--json"], in_tmp))
    _backtest_is_clean(config, in_tmp)


@FUZZ
@given(data=st.data())
def test_mutated_configs_succeed_or_exit_2_in_one_line(data, in_tmp):
    text = yaml.safe_dump({**CONFIG, "data": {"path": str(SAMPLE_FILE)}}, default_flow_style=False)
    lines = _mutate_lines(data.draw, text.splitlines(), odd_cell=False)
    config = in_tmp.parent / "fuzz.yaml"
    config.write_bytes(_encode(data.draw, "\n".join(lines) + "\n"))
    _backtest_is_clean(config, in_tmp)
