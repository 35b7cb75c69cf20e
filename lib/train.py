"""Contrastive fine-tuning of the dual encoder: its configuration, entry point and command line.

``TrainConfig`` holds every parameter; each field's ``metadata["help"]`` is its documentation, read
by ``python -m lib.train --help`` and by ``--notebook-parameters`` (the parameters cell of
``notebooks/03_train.ipynb``, kept in sync by a test), so that any field can be set from the
command line, a YAML file, a grid or papermill. ``train`` resolves the configuration and runs the
loop of ``lib.trainer`` (batches from ``lib.sampling``, ``lib.losses.InfoNCELoss`` and, with
``objective`` distill or contrastive+distill, multilingual distillation onto a frozen teacher's
cached embeddings (``lib.distill``, docs/distillation.md), AdamW, early
stopping on a validation loss, checkpoints a killed run resumes from bit for bit); outputs go to
``outputs/<run>/`` (``config.json``, ``train_log.csv``, ``model/``, ``model-best/``, ``metrics.json``).

Several GPUs: ``torchrun --nproc_per_node=N -m lib.train --config run.yaml key=value ...``
(DistributedDataParallel; ``batch_size`` is the global contrastive batch, see ``lib.trainer``).
On a CPU shared with other jobs, ``OMP_NUM_THREADS=1`` can be several times faster than torch's
default thread count (busy-waiting threads); the thread count may change the last bits of a run.

    config = TrainConfig(backbone="tiny", sampler="hybrid", steps=4, batch_size=8, run="demo")
    result = train(config)                       # progress bar; resumes if outputs/demo has a checkpoint
    model = lib.backbones.load_model(result.model_dir)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from safetensors import SafetensorError

from lib.backbones import BackboneError, get_backbone
from lib.checkpoint import CheckpointError
from lib.data import DataError
from lib.cli import run_cli
from lib.dropout import resolve_dropout_masks
from lib.hardware import resolve_precision
from lib import parameters
from lib.completion import RunConflictError, check_run_claim, record_run
from lib.io import outputs_dir, save_figure
from lib.parameters import PROFILE_HELP, active_profile, fields_help, from_namespace, from_overrides, param, smoke_values
from lib.trainer import RESUME_MAY_DIFFER, TrainError, TrainResult, load_training_groups, run_training  # noqa: F401  01_data imports it from here
from lib.naming import objective_text, train_run_name
from lib.sources import SOURCE_WEIGHTINGS, declared_sizes, source_languages
from lib.validation import ParameterError, check_device, check_range, check_run_name, coerce_fields
from lib.tracking import resolve_report_to, wandb_module

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_ALPHA = 0.5          # hybrid's alpha when none is given
# bad input beyond lib.cli's (ImportError: report_to=wandb without wandb, whose message says how to install it)
CLI_ERRORS = (TrainError, BackboneError, CheckpointError, SafetensorError, ImportError)


@dataclass
class TrainConfig:
    """Every parameter of a training run; ``resolved()`` fills the automatic ones and is what
    ``config.json`` records. Each field's ``metadata["help"]`` is its documentation
    (``python -m lib.train --help``, the parameters cell of ``notebooks/03_train.ipynb``).

        config = TrainConfig(backbone="me5-small-q4", sampler="hybrid", alpha=0.5, steps=150)
        config = TrainConfig.from_file("params/train/x.yaml", ["steps=10", "sampler=mono"])
    """

    backbone: str = param("me5-small-q4", "registry name (params/backbones/*.yaml) or model folder",
                          smoke="tiny", section="model")
    freeze_embeddings: bool | str = param("auto", "freeze the word-embedding table: true | false | auto (CPU only)")
    train_sources: str = param("mlqa-r", "comma-separated training sources (params/sources/*.yaml: mlqa-r, "
                               "xquad-r, mmarco, ...); a batch's source drawn by size", section="data")
    translation_model: str = param("", "machine translation of hub-qa sources; empty: each source's own (NLLB); "
                                   "tiny-mt: random, offline (smoke)")
    languages: str = param("", "comma-separated training languages; empty: all")
    candidate_context: str = param("sentence", "positives as sentences, or sentence + paragraph")
    max_negatives: int = param(3, "hard negatives kept per group and language")
    data_dir: str = param("", "LAReQA folder; empty: LAREQA_DIR or the download cache")
    sampler: str = param("hybrid", "en | xx | mono | cross | hybrid (lib.sampling)", section="batches")
    alpha: float | None = param(None, "hybrid: probability that a batch is monolingual; None (null): 0.5 for "
                                "hybrid, nothing for the other samplers (setting it for them is refused)")
    sampler_options: str = param("", "options of the sampler other than alpha: comma-separated name, equals "
                                 "sign, value (each sampler class declares its own: docs/samplers.md)")
    source_temperature: float = param(1.0, "source of a batch ~ size ** (1 / T)")
    source_weighting: str = param("loaded", "a source's size when drawing a batch's source: loaded (its usable "
                                  "question ids) | declared (`size` in params/sources/<name>.yaml: the paper's "
                                  "set sizes, e.g. mMARCO 39.8M)")
    batch_size: int = param(32, "pairs per contrastive batch (over all processes)", smoke=8)
    hard_negatives: bool = param(True, "add each pair's hard negative to the candidates")
    negative_language: str = param("passage", "language of the hard negative: passage | query")
    temperature: float = param(0.05, "InfoNCE tau (0.05: scale 20)", section="loss and optimisation")
    symmetric: bool = param(False, "add the passage-to-query direction")
    steps: int = param(150, "optimizer steps", smoke=4)
    learning_rate: float = param(3e-5, "AdamW peak learning rate")
    weight_decay: float = param(0.01, "AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = param(0.1, "share of steps with a linearly rising learning rate")
    max_grad_norm: float = param(1.0, "gradient clipping (0: off)")
    grad_accumulation: int = param(1, "batches per optimizer step")
    mini_batch_size: int = param(0, "gradient caching (lib.gradcache): pairs per process encoded at once, "
                                 "the memory of a chunk with the gradients of the whole batch; 0: off")
    precision: str = param("auto", "auto | fp32 | bf16 | fp16; auto: bf16 (fp16 without bf16) on a GPU, bf16 on a "
                                    "CPU with bf16 units, else fp32 (lib.hardware)")
    dropout_masks: str = param("auto", "auto | torch | numpy: who draws the dropout masks; numpy is the same "
                               "dropout, faster on CPU (lib.dropout); auto: numpy on CPU, torch on GPUs")
    seed: int = param(0, "seed of the model, the batches and dropout")
    device: str = param("auto", "auto | cpu | cuda | cuda:N")
    objective: str = param("contrastive", "contrastive (InfoNCE) | distill (MSE to a frozen teacher's embedding "
                           "of the group's text, lib.distill; hard negatives unused) | contrastive+distill "
                           "(InfoNCE + distill_weight x MSE)", section="objective: contrastive, distillation")
    distill_weight: float = param(1.0, "contrastive+distill: weight of the distillation term beside InfoNCE "
                                  "(the term is a squared distance of unit vectors, 2 - 2 cos, on InfoNCE's scale)")
    distill_target: str = param("english", "teacher target of every language of a group: english (the source "
                                "language's text; groups without it: mean) | mean (normalised mean over the "
                                "group's languages)")
    distill_target_centering: bool = param(False, "targets from the teacher's centred embeddings: minus the "
                                           "per-language mean over the training groups, per side (lib.debias "
                                           "center), distilling centering into the weights")
    distill_teacher: str = param("", "teacher: a registry name or model folder; empty: the run's backbone "
                                 "(zero-shot); its embeddings are computed once and cached (lib.distill)")
    validation_fraction: float = param(0.1, "share of question ids held out (split_by_qid)",
                                       section="validation, early stopping, checkpoints")
    validation_source: str = param("", "a registered source (params/sources) as the validation set, e.g. "
                                   "squadshifts (the paper's English SQuADShifts): nothing is held out of "
                                   "train_sources; empty: validation_fraction of train_sources' ids")
    split_seed: int = param(0, "held-out ids and validation batches: the same for every seed")
    validation_sampler: str = param("hybrid", "sampler of the fixed validation batches (alpha 0.5): comparable losses")
    validation_batch_size: int = param(0, "pairs per validation batch; 0: batch_size, lowered to what the "
                                         "held-out ids allow (the value used is in config.json)")
    validation_batches: int = param(8, "fixed validation batches of validation_batch_size pairs")
    eval_every: int = param(25, "steps between validation losses (0: only at the end)")
    patience: int = param(3, "evaluations without improvement before stopping (0: never)")
    checkpoint_every: int = param(50, "steps between checkpoints (0: none)")
    keep_checkpoints: int = param(2, "checkpoints kept (the latest ones)")
    keep_optimizer_state: bool = param(False, "keep the checkpoints' weights and optimizer state once the run "
                                       "is finished (false: only model/ and model-best/ stay, plus the last "
                                       "checkpoint's small state.pt)")
    run: str = param("", "outputs/<run>; empty: lib.naming.train_run_name (backbone, sampler, sources, seed)")
    resume: bool = param(True, "continue from the latest checkpoint of the run")
    report_to: str = param("none", "none | all | tensorboard | wandb | mlflow, or several comma-separated: also log "
                           "loss, validation loss, learning rate, throughput, the configuration and later "
                           "evaluations there (lib.tracking)")

    def __post_init__(self) -> None:
        """Values as their fields declare (``"1e-4"`` from YAML -> 0.0001), or a TrainError naming the field."""
        try:
            coerce_fields(self)
        except ParameterError as error:
            raise TrainError(f"training parameter {error}") from None

    def check(self) -> None:
        """Ranges and combinations that would fail late or do nothing; needs no data, model or folder."""
        try:
            check_range("learning_rate", self.learning_rate, low=0, high=1,  # 0: a frozen control run
                        fix="AdamW fine-tuning uses about 1e-5 to 1e-4")
            check_range("temperature", self.temperature, low=0, low_open=True, fix="InfoNCE tau, e.g. 0.05")
            if self.alpha is not None:
                check_range("alpha", self.alpha, low=0, high=1, fix="the probability of a monolingual batch")
            check_range("source_temperature", self.source_temperature, low=0, low_open=True)
            check_range("weight_decay", self.weight_decay, low=0)
            check_range("max_grad_norm", self.max_grad_norm, low=0)
            check_range("validation_fraction", self.validation_fraction, low=0, high=1, high_open=True)
        except ParameterError as error:
            raise TrainError(str(error)) from None
        self._check_sampler_options()
        if self.sampler != "hybrid" and self.alpha is not None:
            raise TrainError(f"alpha={self.alpha} has no effect with sampler {self.sampler!r} (only 'hybrid' "
                             "mixes monolingual and cross-lingual batches); remove alpha (leave it null) or use "
                             "sampler=hybrid")
        if self.run:
            try:
                check_run_name(self.run)
            except ParameterError as error:
                raise TrainError(str(error)) from None
        self._check_objective()
        if self.batch_size == 1 and not self.hard_negatives and self.objective != "distill":
            raise TrainError("batch_size=1 without hard negatives leaves each query one candidate: the loss is "
                             "0 and nothing is learnt; raise batch_size or set hard_negatives=true")

    def _check_objective(self) -> None:
        """The objective is known and the distillation settings do something with it."""
        from lib.distill import TARGETS
        from lib.losses import OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise TrainError(f"objective {self.objective!r}: expected one of {OBJECTIVES}")
        if self.distill_target not in TARGETS:
            raise TrainError(f"distill_target {self.distill_target!r}: expected one of {TARGETS}")
        try:
            check_range("distill_weight", self.distill_weight, low=0, low_open=True,
                        fix="the weight of the distillation term, e.g. 1.0")
        except ParameterError as error:
            raise TrainError(str(error)) from None
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name.startswith("distill_")}
        unused = [name for name, default in defaults.items() if getattr(self, name) != default and (
            self.objective == "contrastive" or (name == "distill_weight" and self.objective == "distill"))]
        if unused:
            fix = ("distill_weight weighs the term beside InfoNCE: set objective=contrastive+distill or remove it"
                   if self.objective == "distill" else "remove it, or distil with objective=distill or "
                   "objective=contrastive+distill")
            raise TrainError(f"{', '.join(unused)} has no effect with objective {self.objective!r}; {fix}")

    def _check_sampler_options(self) -> None:
        """The options the sampler declares (``lib.sampling``): in range, none it does not declare."""
        from lib.sampling import SAMPLERS, SamplingError, check_sampler_options, options_for, parse_sampler_options

        if self.sampler not in SAMPLERS:
            return                         # resolved() names the registered samplers
        try:
            check_sampler_options(self.sampler, parse_sampler_options(self.sampler_options))
            options_for(self.sampler, dataclasses.asdict(self))
        except SamplingError as error:
            raise TrainError(f"sampler {self.sampler!r}: {error}") from None

    def sampler_labels(self) -> dict[str, float]:
        """The sampler's options as run names show them (``{"a": 0.5}`` for hybrid; lib.sampling)."""
        from lib.sampling import option_labels, options_for

        return option_labels(self.sampler, options_for(self.sampler, dataclasses.asdict(self)))

    def resolved(self) -> "TrainConfig":
        """A copy with ``run``, ``device``, ``precision``, ``dropout_masks`` and ``freeze_embeddings``
        decided, and checked."""
        from lib.backbones import default_device
        from lib.sampling import NEGATIVE_LANGUAGES, SAMPLERS

        config = dataclasses.replace(self)
        for name in ("sampler", "validation_sampler"):
            if getattr(config, name) not in SAMPLERS:
                raise TrainError(f"{name} {getattr(config, name)!r}: expected one of {', '.join(SAMPLERS)}")
        config.check()
        if config.sampler == "hybrid" and config.alpha is None:
            config.alpha = DEFAULT_ALPHA
        get_backbone(config.backbone)  # an unknown name or a folder without a model: before any loading
        if not config.run:
            config.run = train_run_name(Path(config.backbone).name, config.sampler, config.sampler_labels(),
                                        config.train_sources, config.seed,
                                        objective=objective_text(config.objective, config.distill_target,
                                                                 config.distill_target_centering,
                                                                 config.distill_weight))
        try:
            check_device(config.device)
        except ParameterError as error:
            raise TrainError(str(error)) from None
        if config.device == "auto":
            config.device = default_device()
        on_gpu = str(config.device).startswith("cuda")
        if config.precision not in PRECISIONS:
            raise TrainError(f"precision {config.precision!r}: expected one of {PRECISIONS}")
        try:  # bf16 autocast for the encoder's forward; the loss and the metrics stay fp32
            config.precision = resolve_precision(config.precision, config.device)
        except ValueError as error:
            raise TrainError(str(error)) from error
        try:
            config.dropout_masks = resolve_dropout_masks(config.dropout_masks, config.device)
        except ValueError as error:
            raise TrainError(f"{error} (lib.dropout)") from None
        if config.freeze_embeddings == "auto":
            config.freeze_embeddings = not on_gpu
        if not isinstance(config.freeze_embeddings, bool):
            raise TrainError(f"freeze_embeddings {config.freeze_embeddings!r}: expected true, false or 'auto'")
        if config.source_weighting not in SOURCE_WEIGHTINGS:
            raise TrainError(f"source_weighting {config.source_weighting!r}: expected one of {SOURCE_WEIGHTINGS}")
        if config.source_weighting == "declared":
            try:
                declared_sizes(config.source_list())
            except DataError as error:
                raise TrainError(str(error)) from None
        for name in ("sampler", "validation_sampler"):
            if getattr(config, name) not in SAMPLERS:
                raise TrainError(f"{name} {getattr(config, name)!r}: expected one of {SAMPLERS}")
        _check_validation_source(config)
        if config.distill_teacher:
            try:
                get_backbone(config.distill_teacher)
            except BackboneError as error:
                raise TrainError(f"distill_teacher: {error}") from None
        try:
            backends = resolve_report_to(config.report_to)
        except ValueError as error:
            raise TrainError(str(error)) from None
        if "wandb" in backends:
            wandb_module()  # fails now, with how to install it, rather than after the data is loaded
        if config.negative_language not in NEGATIVE_LANGUAGES:
            raise TrainError(f"negative_language {config.negative_language!r}: expected one of {NEGATIVE_LANGUAGES}")
        positive = ("steps", "batch_size", "grad_accumulation", "validation_batches")
        for name in positive:
            if int(getattr(config, name)) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(config, name)!r}")
        for name in ("eval_every", "patience", "checkpoint_every", "max_negatives", "validation_batch_size",
                     "mini_batch_size"):
            if int(getattr(config, name)) < 0:
                raise TrainError(f"{name} must be >= 0, got {getattr(config, name)!r}")
        if config.keep_checkpoints < 1:
            raise TrainError(f"keep_checkpoints must be >= 1, got {config.keep_checkpoints!r}")
        if not 0 <= config.warmup_ratio <= 1:
            raise TrainError(f"warmup_ratio {config.warmup_ratio!r}: expected a share of steps in [0, 1]")
        return config

    def source_list(self) -> list[str]:
        return [s.strip() for s in self.train_sources.split(",") if s.strip()]

    def language_list(self) -> list[str] | None:
        languages = [s.strip() for s in self.languages.split(",") if s.strip()]
        return languages or None

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> "TrainConfig":
        """The fields found in ``namespace`` (a notebook's ``globals()`` after its parameters cell)."""
        return from_namespace(cls, namespace)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                  profile: str = "full") -> "TrainConfig":
        """The profile's values (smoke: ``SMOKE_PROFILE``), a YAML (or JSON) file of parameters, then
        ``key=value`` overrides (values parsed as YAML; ``lib.parameters.from_overrides``)."""
        try:
            return from_overrides(cls, path, overrides, profile)
        except ValueError as error:
            raise TrainError(str(error)) from None


# The notebooks' CI profile (HBT_PROFILE=smoke): the TrainConfig defaults it replaces.
SMOKE_PROFILE = smoke_values(TrainConfig)


ONE_LANGUAGE_SAMPLERS = ("en", "mono")   # the samplers that need no second language


def _check_validation_source(config: "TrainConfig") -> None:
    """A validation source must be registered, and its languages must allow the validation sampler
    (SQuADShifts is English only: ``validation_sampler=en``); checked before anything is loaded."""
    if not config.validation_source:
        return
    try:
        languages = source_languages(config.validation_source)
    except DataError as error:
        raise TrainError(f"validation_source: {error}") from None
    if len(languages) == 1 and config.validation_sampler not in ONE_LANGUAGE_SAMPLERS:
        raise TrainError(f"validation_sampler {config.validation_sampler!r} needs two languages, but validation_source "
                         f"{config.validation_source!r} has only {languages}; set validation_sampler=en or mono")
    if config.validation_sampler == "en" and "en" not in languages:
        raise TrainError(f"validation_sampler 'en' needs English, which validation_source "
                         f"{config.validation_source!r} lacks ({languages}); use mono or another sampler")


def notebook_parameters() -> str:
    """The parameters cell of ``notebooks/03_train.ipynb`` (``python -m lib.train --notebook-parameters``)."""
    return parameters.notebook_parameters(TrainConfig)


def train(config: TrainConfig, groups=None, progress: bool = True,
          on_step_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train as ``config`` says; resume from the run's latest checkpoint when there is one.

    ``groups``: ``(train_groups, validation_groups)`` to use instead of loading ``train_sources``
    (tests, other data); ``on_step_end(step)`` is called after each step's checkpoint.

        result = train(TrainConfig(backbone="tiny", steps=4, batch_size=8, run="demo"))
        result.metrics["best_val_loss"], result.model_dir
    """
    config = config.resolved()
    claim = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUME_MAY_DIFFER}
    path = outputs_dir() / config.run
    try:  # resume=False starts the run over: it may write over any run of this name
        check_run_claim(path, "train", claim, "lib.train", force=not config.resume, fix="resume=False")
    except RunConflictError as error:
        raise TrainError(str(error)) from None
    result = run_training(config, groups, progress, on_step_end)
    if int(os.environ.get("RANK", "0")) == 0:
        record_run(path, "train", claim, "lib.train", replace=not config.resume)
    return result


# --------------------------------------------------------------------------------------------
# Figures and the command line


def plot_loss_curves(log: pd.DataFrame, path: str | os.PathLike | None = None, smooth: int = 10):
    """Training loss per step (and its rolling mean over ``smooth`` steps) and validation loss."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure, axis = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=log, x="step", y="loss", label="train", alpha=0.45 if len(log) >= smooth else 1.0, ax=axis)
    if len(log) >= smooth:
        sns.lineplot(x=log.step, y=log.loss.rolling(smooth, min_periods=1).mean(),
                     label=f"train (mean of {smooth} steps)", ax=axis)
    evaluated = log.dropna(subset=["val_loss"])
    if len(evaluated):
        sns.lineplot(data=evaluated, x="step", y="val_loss", marker="o", label="validation", ax=axis)
    axis.set(xlabel="optimizer step", ylabel="loss (objective)", title="Training and validation loss")
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def main(argv: Sequence[str] | None = None) -> TrainResult | None:
    """``python -m lib.train [--config file.yaml] [key=value ...]`` (also under torchrun);
    ``--help`` lists every TrainConfig field, ``--notebook-parameters`` prints 03_train's parameters cell."""
    parser = argparse.ArgumentParser(prog="python -m lib.train", description="Contrastive fine-tuning of the dual "
                                     "encoder; every TrainConfig field can be set as key=value.",
                                     epilog="training parameters (key=value; default, help):\n" + fields_help(TrainConfig)
                                     + PROFILE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. steps=100 sampler=mono")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    parser.add_argument("--notebook-parameters", action="store_true",
                        help="print the parameters cell of notebooks/03_train.ipynb (from TrainConfig) and exit")
    args = parser.parse_intermixed_args(argv)   # options and key=value pairs in any order
    if args.notebook_parameters:
        print(notebook_parameters())
        return None
    config = TrainConfig.from_file(args.config, args.overrides, profile=active_profile())
    result = train(config, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model: {result.model_dir}\nbest model: {result.best_model_dir}\nmetrics: {result.metrics}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()      # every rank done communicating before gloo/NCCL is torn down
        torch.distributed.destroy_process_group()
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.train", CLI_ERRORS))
