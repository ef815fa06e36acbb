from __future__ import annotations

import numpy as np

from genesis_core.features import FeatureStore
from genesis_core.strategy.model import DEFAULT_FEATURES, load_model, save_model, train_model


def test_training_uses_only_the_window_and_no_label_past_its_end(btc, tmp_path):
    train = btc.window("2019-01-01", "2019-12-31", 0).candles
    model = train_model(train, "BTCUSD", horizon=6)
    # the last 6 bars have no complete forward label inside the window and are not used
    store = FeatureStore(train)
    usable = np.isfinite(np.column_stack([store.get(f) for f in model.features])).all(axis=1)
    assert model.training["fit_rows"] + model.training["calibration_rows"] <= usable[:-6].sum()
    assert usable[:-6].sum() - (model.training["fit_rows"] + model.training["calibration_rows"]) < 20  # only zero-return bars dropped
    assert model.training["last_bar"] == "2019-12-31T23:00:00Z"
    # a model is a pure function of its window: more data after the window changes nothing
    longer = btc.window("2019-01-01", "2020-06-30", 0).candles
    again = train_model(longer.slice(0, len(train)), "BTCUSD", horizon=6)
    assert again == model
    path = tmp_path / "m.json"
    save_model(model, path)
    loaded, sha = load_model(str(path))
    assert loaded == model and len(sha) == 64
    p = loaded.p_buy(FeatureStore(btc.window("2020-01-01", "2020-03-31", 600).candles))[600:]
    assert np.all((p > 0) & (p < 1))
    assert 0.3 < p.mean() < 0.7


def test_a_model_path_that_is_a_pipe_a_device_or_too_large_is_refused_in_one_line(tmp_path):
    """A model named by a config is read whole: a pipe waited for a writer for ever, and /dev/zero
    was read until memory ran out (a MemoryError from the strategy's warmup_bars)."""
    import os
    import resource
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    os.mkfifo(tmp_path / "model.fifo")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "huge.json").write_bytes(b" " * ((16 << 20) + 1))

    def four_gib() -> None:  # what /dev/zero takes is this process's memory, not the machine's
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    for name, why in (("model.fifo", "a pipe, not a file"), ("zero.json", "a device, not a file"),
                      ("huge.json", "more than 16,777,216 bytes")):
        model = str(tmp_path / name)
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({**base, "params": {**base["params"], "model": model}}))
        proc = subprocess.run([sys.executable, "-m", "genesis_core", "backtest", "-c", str(config)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, preexec_fn=four_gib)
        assert (proc.returncode, proc.stderr.strip()) == (2, f"error: model {model}: cannot read it: {why}"), proc.stderr


def test_a_model_file_edited_by_hand_is_refused_naming_what_is_wrong(tmp_path):
    """A model file was read without a check of what it holds: a weight short ended a backtest in
    "strategy 'reference' raised ValueError: zip() argument 4 is shorter than arguments 1-3", a std
    of 0 in NumPy's divide-by-zero warnings, no training span in a KeyError, a NaN weight in a run of
    no trade. Each is now one line naming the file and the key; a file `model train` wrote loads."""
    import json

    import yaml

    from tests.conftest import ROOT
    from tests.runs import genesis

    good = json.loads((ROOT / "src" / "genesis_core" / "strategy" / "models" / "btcusd_1h.json").read_text())
    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    training = {k: v for k, v in good["training"].items() if k != "first_bar"}
    for name, model, said in (
        ("short", {**good, "weights": good["weights"][:3]}, "weights holds 3 value(s) for 9 feature(s): one a feature"),
        ("std0", {**good, "std": [0.0, *good["std"][1:]]}, "std.0: Input should be greater than 0"),
        ("nan", json.dumps({**good, "weights": [float("nan"), *good["weights"][1:]]}), "weights.0: Input should be a finite number"),
        ("text", {**good, "intercept": "0.1"}, "intercept: Input should be a valid number, not '0.1' (a number in quotes, read as text)"),
        ("span", {**good, "training": training}, "training has no first_bar (the span it learnt from, as ISO times)"),
        ("calibration", {**good, "calibration": {"a": 1.0}}, "calibration holds ['a'], not a and b"),
        ("horizon", {**good, "horizon": 0}, "horizon: Input should be greater than or equal to 1"),
        ("extra", {**good, "bias": 1.0}, "bias: Extra inputs are not permitted"),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(model if isinstance(model, str) else json.dumps(model))
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({**base, "params": {**base["params"], "model": str(path)},
                                          "data": {**base["data"], "path": str(ROOT / base["data"]["path"])}}))
        out = tmp_path / f"{name}.out.json"
        proc = genesis("backtest", "-c", str(config), "--out", str(out))
        assert (proc.returncode, proc.stderr.strip()) == (2, f"error: model {path} is not a valid model file: {said}"), proc.stderr
        assert not out.exists()
    (tmp_path / "elsewhere.json").write_text(json.dumps({**good, "training": {k: good["training"][k] for k in ("first_bar", "last_bar")}}))
    shown = genesis("model", "show", str(tmp_path / "elsewhere.json"))  # a model not trained here: what it does not record
    assert shown.returncode == 0 and "rows fitted unrecorded, label: sign of the 4-bar return" in shown.stdout, shown.stderr
    trained = genesis("model", "train", "--out", str(tmp_path / "trained.json"), "--start", "2019-01-01", "--end", "2019-06-30")
    assert trained.returncode == 0 and genesis("model", "show", str(tmp_path / "trained.json"), "--json").returncode == 0


def test_a_window_too_short_to_train_on_says_where_its_bars_went(btc):
    """A two-day window said "only 0 usable bars; need at least 200", as a horizon longer than the
    window did: it now counts the bars before every feature warmed up and those without a label."""
    import pytest

    from genesis_core.errors import DataError
    from tests.runs import genesis

    two_days = btc.window("2021-01-01", "2021-01-02", 0).candles
    with pytest.raises(DataError) as short:
        train_model(two_days, "BTCUSD")
    assert str(short.value) == ("training window has only 0 usable bars of its 48: 48 before every feature has warmed up, the last 4 "
                                "without a 4-bar return to label them; need at least 200 (a longer window)")
    half_year = btc.window("2020-01-01", "2020-06-30", 0).candles
    cold = int((~np.isfinite(np.column_stack([FeatureStore(half_year).get(f) for f in DEFAULT_FEATURES])).all(axis=1)).sum())
    with pytest.raises(DataError) as far:
        train_model(half_year, "BTCUSD", horizon=100_000)
    assert str(far.value) == (f"training window has only 0 usable bars of its {len(half_year.close)}: {cold} before every feature has "
                              f"warmed up, the last {len(half_year.close)} without a 100000-bar return to label them; need at least 200 "
                              "(a longer window)")
    zero = genesis("model", "train", "--out", "m.json", "--symbol", "BTCUSD", "--horizon", "0")
    assert zero.returncode == 2 and "--horizon" in zero.stderr  # refused before any data is read
