"""A study's spec and its resume signature.

The signature covers what makes a study's results comparable and nothing else: search space,
the fixed config (base + champion + window, no trial values), scoring and constraints, data
content and window, code version, mode. Not covered: the stop policy, worker count and storage
URL, so a run can be extended or scaled out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import optuna

from genesis_core.backtest import CACHE, BacktestConfig, Backtester, ConfigBuilder
from genesis_core.config import read_config_file
from genesis_core.data import Candles
from genesis_core.errors import GenesisError, clip
from genesis_core.fingerprint import differences, fingerprint, strict_json
from genesis_core.optimizer._config import OptimizerConfig
from genesis_core.optimizer._samplers import (
    FEASIBILITY_SEED_OFFSET,
    PhasedSampler,
    make_pruner,
    make_sampler,
    offset_seed,
    sampler_class,
)
from genesis_core.optimizer._space import SearchSpace
from genesis_core.optimizer._storage import RunFiles, default_storage_url, redact, shares_files, trial_count
from genesis_core.plugins import check_user_code, code_fingerprint, plugin_source
from genesis_core.records import RunFolder
from genesis_core.scoring import score_function
from genesis_core.strategy import get_strategy

SIGNATURE_ATTR = "genesis_signature"
SPACE_ATTR = "genesis_space"
SIGNED_ATTR = "genesis_signed"  # what the fixed_config, scoring and data fingerprints are of
RUN_ID_ATTR = "genesis_run_id"  # which study a run folder is: run.json records it (run_id)


class ResumeBlocked(GenesisError):
    exit_code = 2


# samplers whose proposals never depend on the scores told
SCORE_BLIND = (optuna.samplers.GridSampler, optuna.samplers.RandomSampler, optuna.samplers.QMCSampler)


@dataclass
class StudySpec:
    """Everything a worker needs; built once at the edge and handed to every worker process."""

    config: OptimizerConfig  # the whole study config (a subclass) when the edge has one: it is recorded in run.json
    space: SearchSpace
    base: dict[str, Any]
    champion: dict[str, Any] | None
    overrides: dict[str, Any]
    storage_url: str
    folder: RunFolder
    fixed: BacktestConfig = field(init=False)

    def __post_init__(self) -> None:
        self.fixed = self.build()

    @cached_property
    def build(self) -> ConfigBuilder:
        """A trial's effective config from its parameters (``build_config`` with this study's base, champion and overrides)."""
        return ConfigBuilder(self.base, self.champion, self.overrides)

    @property
    def name(self) -> str:
        return self.config.meta.study_name

    def phase(self, number: int) -> int:
        """The scoring phase of trial ``number``: 1 (feasibility first) for the first ``scoring.phase1.trials``."""
        return 1 if number < self.config.scoring.phase1.trials else 2

    @cached_property
    def scoring(self) -> dict[str, Any]:
        """The scoring settings, and the source of a user's score function (an edit rescores)."""
        return {"scoring": self.config.scoring.model_dump(mode="json"),
                "constraints": self.config.constraints.model_dump(mode="json"),
                "objective_code": plugin_source(score_function(self.config.scoring.objective))}

    @cached_property
    def scoring_fingerprint(self) -> str:
        """Part of every trial's cache key: computed once, not per trial."""
        return fingerprint(self.scoring)

    def backtester(self) -> Backtester:
        """A trial process's backtester: the disk caches, and the strategy's time to decide a window
        limited to ``meta.trial_timeout_seconds``."""
        return Backtester(CACHE, self.config.meta.trial_timeout_seconds)

    def signed(self, candles: Candles, whole_file: bool = False) -> dict[str, Any]:
        """What the signature's fixed_config, scoring and data fingerprints are of, kept beside it in
        the study so that a refused resume can say what changed, path by path. Of the data, the bars
        up to the explore window's end: bars appended after it (`genesis data update`) change no
        trial. ``whole_file``: the file's fingerprint, as studies were signed before."""
        fixed = self.fixed.model_dump(mode="json")
        fixed["data"].pop("path")  # the content is in 'data'; a moved file is the same data
        fixed.pop("workdir", None)  # the same: and where genesis runs is none of the study's settings
        d = self.fixed.data
        bars = {"file": candles.fingerprint} if whole_file else {"bars": candles.through(d.end).fingerprint}
        return {
            "fixed_config": fixed,
            "scoring": self.scoring,
            "data": {**bars, "start": d.start, "end": d.end, "warmup_bars": d.warmup_bars},
        }

    def signature(self, candles: Candles) -> dict[str, str]:
        return {
            "search_space": self.space.fingerprint,
            **{key: fingerprint(value) for key, value in self.signed(candles).items()},
            "code": code_fingerprint(type(get_strategy(self.fixed.strategy)), score_function(self.config.scoring.objective),
                                     sampler_class(self.config.meta.sampler.name)),
            "mode": "explore",
        }

    def sampler(self, worker_index: int = 0) -> optuna.samplers.BaseSampler:
        """The configured sampler; with phase-1 trials, wrapped so that they are chosen on the
        feasibility scale in a companion study (``PhasedSampler``). Not a sampler that reads no score
        (grid, random, QMC): a companion would only be a second stream of its points, and QMC's
        (unscrambled Sobol, Optuna's default) the same points again, answered from the cache."""
        s = self.config.meta.sampler
        main = make_sampler(s.name, s.kwargs, self.space.grid, len(self.space.distributions), worker_index)
        phase1 = self.config.scoring.phase1.trials
        if phase1 == 0 or isinstance(main, SCORE_BLIND):
            return main
        feasibility = make_sampler(s.name, s.kwargs, self.space.grid, len(self.space.distributions),
                                   worker_index + FEASIBILITY_SEED_OFFSET)
        return PhasedSampler(main, feasibility, dict(self.space.distributions), phase1)

    @property
    def reproducible(self) -> bool:
        """Whether several workers run in reproducible batches (see ``Meta.parallel``): asked for, or
        a seeded run on the journal (a database storage is for workers on many machines)."""
        m = self.config.meta
        seeded_here = m.sampler.kwargs.get("seed") is not None and self.storage_url.startswith("journal:")
        return m.parallel == "reproducible" or (m.parallel == "auto" and seeded_here)

    def sampler_seeds(self, first: int, workers: int) -> list[int]:
        """The sampler seeds of workers ``first`` .. ``first + workers - 1`` (none without a seed)."""
        seed = self.config.meta.sampler.kwargs.get("seed")
        return [] if seed is None else [offset_seed(seed, first + i) for i in range(workers)]

    def pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.config.meta.pruner.name, self.config.meta.pruner.kwargs)


def study_spec(config: OptimizerConfig, champion: dict[str, Any] | None, storage: str | None = None) -> StudySpec:
    """The spec of ``config``'s study; ``champion`` is the current champion's params (merged into
    the base config unless ``meta.skip_champion_merge``). Everything is checked before anything is written."""
    check_user_code()
    m = config.meta
    data: dict[str, Any] = {"start": m.sample_start, "end": m.sample_end}
    if m.data is not None:  # another file: the base config's data.symbol spoke of its own
        data |= {"path": m.data, "symbol": None}
    if m.warmup_bars is not None:
        data["warmup_bars"] = m.warmup_bars
    url = storage or m.storage or default_storage_url(m.results_dir)
    files = RunFiles.of(url, m.storage_retry_seconds) if shares_files(url) else None  # every machine sees the run
    spec = StudySpec(config, SearchSpace(config), read_config_file(m.base_config), None if m.skip_champion_merge else champion,
                     {"data": data}, url, RunFolder.of(m.results_dir, m.study_name, files))
    spec.build(spec.space.midpoint())  # every searched path exists
    spec.sampler()  # sampler and pruner kwargs are checked too
    spec.pruner()
    return spec


def signature_diff(stored: dict[str, Any], current: dict[str, Any], stored_parts: dict[str, Any],
                   parts: dict[str, Any]) -> list[str]:
    """Human-readable differences, path by path where the study kept what it signed (the search
    space, fixed config, scoring and data); a fingerprint change otherwise."""
    lines = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) == current.get(key):
            continue
        if key in stored_parts and key in parts:
            lines += [f"{key}: {path or '(all)'}: {clip(strict_json(a, None), 60)} -> {clip(strict_json(b, None), 60)}"
                      for path, a, b in differences(stored_parts[key], parts[key])]
        elif key == "code":
            lines.append("code: the code changed (Genesis-Core, or a user strategy, score function or sampler)")
        else:
            lines.append(f"{key}: {str(stored.get(key, '(absent)'))[:16]} -> {str(current.get(key, '(absent)'))[:16]}")
    return lines


def stored_signature_diff(attrs: dict[str, Any], spec: StudySpec, candles: Candles) -> list[str] | None:
    """How a stored study's signature differs from ``spec``'s on ``candles``; None if the study has none."""
    stored = attrs.get(SIGNATURE_ATTR)
    if stored is None:
        return None
    stored_parts = {**attrs.get(SIGNED_ATTR, {}), "search_space": attrs.get(SPACE_ATTR, {})}
    current, parts = spec.signature(candles), {**spec.signed(candles), "search_space": spec.space.spec}
    if stored.get("data") == fingerprint(spec.signed(candles, whole_file=True)["data"]):  # signed by the file, this one
        stored, stored_parts = {**stored, "data": current["data"]}, {**stored_parts, "data": parts["data"]}
    diff = signature_diff(stored, current, stored_parts, parts)
    if spec.champion is not None and stored.get("fixed_config") != current["fixed_config"]:
        diff.append("(the current champion's params are merged into the fixed config: a promotion changes it; "
                    "meta.skip_champion_merge, or a new study name)")
    return diff


def check_signature(optuna_study: optuna.Study, spec: StudySpec, candles: Candles, force_resume: bool,
                    backfill_signature: bool) -> list[str]:
    """Stop before any trial if the study was made with other settings (warn if it has no signature),
    or if its run folder is another study's (``claim_folder``); returns notes to record in the run metadata."""
    n_trials = trial_count(optuna_study)
    claim_folder(optuna_study, spec, n_trials)
    notes: list[str] = []
    diff = stored_signature_diff(optuna_study.user_attrs, spec, candles)
    if diff is None:
        if n_trials and not backfill_signature:
            notes.append(
                f"study {spec.name!r} has {n_trials} trials but no signature, so nothing proves they "
                "were made with this config; --backfill-signature adopts the current one"
            )
            return notes
        if n_trials:
            notes.append("signature backfilled by --backfill-signature")
    elif diff and not force_resume:
        raise ResumeBlocked("resume blocked: study signature mismatch\n  " + "\n  ".join(diff)
                            + "\n(use a new study name, --study NAME, or --force-resume to continue anyway)")
    elif diff:
        _refuse_incompatible_space(optuna_study.user_attrs.get(SPACE_ATTR, {}), spec.space.spec)
        notes.append("resumed despite signature mismatch (--force-resume): " + "; ".join(diff))
    optuna_study.set_user_attr(SIGNATURE_ATTR, spec.signature(candles))
    optuna_study.set_user_attr(SPACE_ATTR, spec.space.spec)
    optuna_study.set_user_attr(SIGNED_ATTR, spec.signed(candles))
    return notes


def claim_folder(optuna_study: optuna.Study, spec: StudySpec, found: int) -> None:
    """Refuse a run folder another study wrote (``folder_taken``; the study holds ``found`` trials)
    before a trial of this one is written over its trials' artifacts under the same numbers; give a
    study its id."""
    other = folder_taken(spec, optuna_study.user_attrs, found)
    if other is not None:
        raise ResumeBlocked(other)
    if RUN_ID_ATTR not in optuna_study.user_attrs:
        optuna_study.set_user_attr(RUN_ID_ATTR, uuid.uuid4().hex)


def folder_taken(spec: StudySpec, attrs: dict[str, Any], found: int) -> str | None:
    """Why the run folder of ``spec`` is another study's than the one with user attributes ``attrs``
    and ``found`` trials, if it is. A study of the same name in another storage (a journal's study
    run again on SQLite or PostgreSQL, or a storage deleted) took the first's folder, and its
    trials.csv, best trial and artifacts became the second's under the first's sessions. Each study
    holds an id that its run.json records; a folder written before ids is another study's when it
    holds trials and the study none."""
    record = spec.folder.read_run_if_any()
    if record is None:
        return None
    held = sum(record.states.values())
    if (attrs.get(RUN_ID_ATTR) == record.run_id) if record.run_id is not None else (not held or found):
        return None
    return (f"{spec.folder.path} holds the run of another study named {spec.name!r} ({held:,} trial(s) in {record.storage}), not "
            f"of this one ({found:,} trial(s) in {redact(spec.storage_url)}): its trials' artifacts would be written over. Give "
            "this study another name (--study NAME) or meta.results_dir, or move that folder away")


def _refuse_incompatible_space(stored: dict[str, Any], current: dict[str, Any]) -> None:
    """Optuna cannot mix a parameter's old and new categorical choices or types: say so, not crash."""
    for path in sorted(set(stored) & set(current)):
        old, new = stored[path], current[path]
        if old["type"] != new["type"] or (old["type"] in ("categorical", "grid") and old != new):
            raise ResumeBlocked(
                f"cannot resume even with --force-resume: parameter {path} changed from {old} to {new}, "
                "which Optuna cannot mix in one study; use a new study name (--study NAME)"
            )
