"""The study config: one YAML file whose sections belong to their layers (meta, parameters,
constraints and scoring to the optimizer; validation; promotion), parsed once at the edge and
handed down typed. A run's ``run.json`` records it, so a finished run can be validated and
promoted with the settings it was made with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_validator

from genesis_core.champion import PromotionConfig
from genesis_core.config import parse_model, read_config_file
from genesis_core.errors import ConfigError
from genesis_core.optimizer import OptimizerConfig, StudySpec, load_optimizer_config, study_spec
from genesis_core.records import ChampionStore, RunFolder, RunRecord
from genesis_core.validation import ValidationConfig


class StudyConfig(OptimizerConfig):
    """The whole optimizer YAML."""

    validation: ValidationConfig = ValidationConfig()
    promotion: PromotionConfig = PromotionConfig()

    @model_validator(mode="after")
    def _promotion_needs_validation(self) -> StudyConfig:
        if self.promotion.enabled and not self.validation.enabled:
            raise ValueError("promotion.enabled needs validation.enabled: only validated candidates can be promoted")
        return self

    def champion_store(self) -> ChampionStore:
        """Where this study's champion lives."""
        return ChampionStore(self.meta.results_dir, self.meta.symbol, self.meta.timeframe)

    def spec(self, storage: str | None = None) -> StudySpec:
        """The optimizer's spec of this study, the current champion's params merged (unless skipped);
        a champion of another strategy is refused, never merged."""
        champion = None if self.meta.skip_champion_merge else self.champion_store().load()
        if champion is not None:
            base = read_config_file(self.meta.base_config).get("strategy", "reference")
            if champion.effective_config.strategy != base:
                raise ConfigError(f"the {self.meta.symbol} {self.meta.timeframe} champion in {self.meta.results_dir} is a "
                                  f"{champion.effective_config.strategy!r} config, this study's base config "
                                  f"({self.meta.base_config}) is {base!r}: its params cannot be merged; set "
                                  "meta.skip_champion_merge: true, or use another meta.symbol or results_dir")
        return study_spec(self, None if champion is None else champion.effective_config.params, storage)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; ConfigError names the path of every problem."""
    return load_optimizer_config(path, StudyConfig)


def run_config(run: RunRecord) -> StudyConfig:
    """The study config a run was made with (from its run.json)."""
    config: dict[str, Any] = run.config
    return parse_model(StudyConfig, config, "run.json config")


def load_run(folder: RunFolder) -> tuple[RunRecord, StudyConfig]:
    run = folder.read_run()
    return run, run_config(run)
