"""``tune``: an Optuna study over optimiser and learning rate (as the seed's), with median
pruning on the validation mean Dice reported after every epoch; the trials table is written
to ``<out_dir>/trials.csv`` after each trial."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback

from .fit import FitConfig, fit
from .module import MONITOR, OPTIMIZERS

TRIALS_CSV = "trials.csv"


class OptunaPruning(Callback):
    """Report ``MONITOR`` to the trial after each validation; stop the trial when the
    pruner says so (``optuna.TrialPruned`` propagates out of ``fit``)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[MONITOR]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """One row per trial: number, state, value (best val mean Dice), params, seconds."""
    names = sorted({k for t in study.trials for k in t.params})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", *names, "seconds", "last_epoch"])
        for t in study.trials:
            seconds = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else ""
            )
            last = max(t.intermediate_values) if t.intermediate_values else ""
            writer.writerow(
                [t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                 *[t.params.get(k, "") for k in names], seconds and f"{seconds:.1f}", last]
            )
    return path


def tune(
    base: FitConfig,
    n_trials: int = 8,
    optimizers: tuple[str, ...] = ("adamw", "adam", "sgd"),
    lr_range: tuple[float, float] = (1e-4, 3e-3),
    storage: str | None = None,
    study_name: str = "aspects-unet",
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Run ``n_trials`` short fits of ``base`` with sampled optimiser/lr, each in
    ``<out_dir>/trial_<n>``; maximise the best validation mean Dice of a trial.

    ``pruner``: default median pruning after two complete trials and one epoch.
    """
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {OPTIMIZERS}")
    out = Path(base.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=storage is not None,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        config = replace(
            base,
            out_dir=str(out / f"trial_{trial.number}"),
            optimizer=trial.suggest_categorical("optimizer", list(optimizers)),
            lr=trial.suggest_float("lr", *lr_range, log=True),
        )
        result = fit(config, extra_callbacks=[OptunaPruning(trial)])
        if result.best_score is None:
            raise RuntimeError("the trial ran no validation; raise --epochs")
        return result.best_score

    def save(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        write_trials_csv(study, out / TRIALS_CSV)

    study.optimize(objective, n_trials=n_trials, callbacks=[save], catch=())
    write_trials_csv(study, out / TRIALS_CSV)
    return study
