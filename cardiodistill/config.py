"""Configuration: pydantic models per stage, YAML presets, and ``--set key=value`` overrides.

A config is built in three layers, later ones winning:

1. the defaults written in the models below;
2. a preset: a YAML file shipped in ``cardiodistill/configs`` (``quick``, ``full``) or any YAML path;
3. overrides ``key.sub=value`` from the command line, values parsed as YAML (``5``, ``0.1``,
   ``true``, ``[a4c, psax]``).

Every model forbids unknown keys, so a typo is a one-line :class:`ConfigError`, not a silent default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from .errors import ConfigError
from .records import DEFAULT_BAND


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrevalenceConfig(_Strict):
    """Population prevalences (fractions of patients). Correlations between conditions come from
    a latent factor model (:mod:`cardiodistill.synth.population`); these marginals are exact in
    expectation."""

    male: float = Field(0.5, ge=0, le=1)
    mi: float = Field(0.12, ge=0, le=1, description="prior myocardial infarction")
    cardiomyopathy: float = Field(0.05, ge=0, le=1, description="non-ischaemic dilated cardiomyopathy")
    lvh: float = Field(0.15, ge=0, le=1, description="left-ventricular hypertrophy")
    af: float = Field(0.10, ge=0, le=1, description="atrial fibrillation")
    bbb: float = Field(0.07, ge=0, le=1, description="bundle branch block (left or right)")
    lbbb_fraction: float = Field(0.45, ge=0, le=1, description="share of bundle branch blocks that are left")
    ischaemia: float = Field(0.06, ge=0, le=1, description="acute ischaemia at the time of the study")
    hyperkalaemia: float = Field(0.05, ge=0, le=1, description="potassium >= 5.5 mmol/L")
    ckd: float = Field(0.15, ge=0, le=1, description="chronic kidney disease, eGFR < 60")
    anaemia: float = Field(0.12, ge=0, le=1)
    valve: float = Field(0.08, ge=0, le=1, description="aortic stenosis or mitral regurgitation")
    valve_severe_fraction: float = Field(0.5, ge=0, le=1)


class EcgSynthConfig(_Strict):
    fs: float = Field(500.0, gt=0, description="12-lead sampling rate, Hz")
    duration_s: float = Field(10.0, gt=2, le=120)
    noise: float = Field(1.0, ge=0, description="scale on all noise sources; 0 gives clean signals")
    resolution_uv: float = Field(1.0, gt=0, description="amplitude resolution (one ADC step), microvolts")


class MobileSynthConfig(_Strict):
    enabled: bool = True
    device: Literal["single_lead", "six_lead"] = "six_lead"
    fs: float = Field(300.0, gt=0)
    noise: float = Field(1.0, ge=0)
    resolution_uv: float = Field(10.0, gt=0)


class EchoSynthConfig(_Strict):
    enabled: bool = True
    size: int = Field(112, ge=32, le=512, description="frame height and width, pixels")
    fps: float = Field(50.0, gt=0)
    duration_s: float = Field(2.8, gt=0.5, description="clip length; 2.8 s holds two cycles down to 43 bpm")
    views: list[Literal["a4c"]] = Field(
        default_factory=lambda: ["a4c"], min_length=1, max_length=1,
        description="echo views to render; the apical four-chamber view is the one implemented",
    )
    noise: float = Field(1.0, ge=0)


class LabsSynthConfig(_Strict):
    missing_rate: float = Field(0.08, ge=0, le=1, description="chance each lab value is missing")


class NotesSynthConfig(_Strict):
    omission_rate: float = Field(0.1, ge=0, le=1, description="chance each finding is left out of the note")
    style: Literal["clinical", "exact"] = Field(
        "clinical", description="clinical: a reader's calls, with errors, hedging and pending echoes; exact: the truth")


class SplitConfig(_Strict):
    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, they add up to {total:g}")
        return self


class SynthConfig(_Strict):
    patients: int = Field(200, ge=1)
    seed: int = 0
    chunk_size: int = Field(32, ge=1, description="patients generated at once; bounds memory")
    workers: int = Field(1, ge=1, description="processes generating chunks in parallel")
    label_noise: float = Field(0.05, ge=0, le=0.5, description="chance the recorded triage label is flipped")
    prevalence: PrevalenceConfig = Field(default_factory=PrevalenceConfig)
    ecg: EcgSynthConfig = Field(default_factory=EcgSynthConfig)
    mobile: MobileSynthConfig = Field(default_factory=MobileSynthConfig)
    echo: EchoSynthConfig = Field(default_factory=EchoSynthConfig)
    labs: LabsSynthConfig = Field(default_factory=LabsSynthConfig)
    notes: NotesSynthConfig = Field(default_factory=NotesSynthConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    files: bool = Field(True, description="write per-patient clinical files (WFDB, DICOM, CSV, text)")
    stream: bool = Field(False, description="also write the cohort as a stream in OUT/stream, as `cardiodistill "
                         "stream` does (the align encoders' inputs, for large cohorts and many GPUs); needs files")

    @model_validator(mode="after")
    def _stream_needs_files(self) -> SynthConfig:
        if self.stream and not self.files:
            raise ValueError("synth.stream=true needs synth.files=true: the stream is written from the clinical files")
        return self


class ProbeConfig(_Strict):
    """The per-modality probes that measure what each modality carries about each label."""

    folds: int = Field(5, ge=2)
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples for AUROC confidence intervals")


class TrainerConfig(_Strict):
    """How a stage trains: hardware, parallelism, precision, logging, checkpoints (Lightning)."""

    accelerator: str = Field("auto", description="cpu, gpu, mps or auto")
    devices: int | str = Field("auto", description="devices per node, or 'auto'")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="auto, ddp, ddp_spawn, fsdp, ...")
    precision: str = Field("32-true", description="32-true, bf16-mixed, 16-mixed")
    threads: int | None = Field(None, ge=1, description="CPU intra-op threads (None: torch's default)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    accumulate: int = Field(1, ge=1, description="batches per optimizer step")
    gradient_clip: float = Field(0.0, ge=0, description="clip the gradient norm to this (0: off)")
    deterministic: bool = False
    log_every: int = Field(20, ge=1, description="optimizer steps between logged metrics")
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints (last.ckpt)")
    seed: int = 0


class OptimConfig(_Strict):
    """AdamW with a linear warm-up into a cosine decay, per optimizer step."""

    lr: float = Field(1e-3, gt=0, description="peak learning rate at the reference batch size")
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    batch_size: int = Field(64, ge=1, description="per process")
    warmup_steps: int = Field(100, ge=0)
    max_steps: int = Field(2000, ge=1)
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="exponential moving average of the weights (train.engine.WeightEMA): "
        "validation, the checkpoints and the final model use the average; 0 = off, 0.995 averages over ~200 steps")


class EcgSourceConfig(_Strict):
    """One source of unlabelled ECGs for pretraining (see :mod:`cardiodistill.data.ecg_windows`)."""

    kind: Literal["ptbxl", "cinc2017", "synth", "cohort", "files"]
    path: str | None = None
    name: str | None = None
    folds: list[int] | None = Field(None, description="ptbxl: strat_folds to read (default: all)")
    patients: int = Field(200, ge=1, description="synth: patients to simulate")
    seed: int = Field(0, description="synth: cohort seed")
    pattern: str = Field("**/*.hea", description="files: glob under path")
    max_records: int | None = Field(None, ge=1)
    max_windows: int = Field(3, ge=1, description="windows taken per record, spread over it")
    exclude: str | None = Field(None, description="a text file of record ids to leave out, one per line "
                                                    "(e.g. the records an evaluation holds out)")


class EcgPretrainConfig(_Strict):
    """Stage 1 for ECG: the encoder, the objective, the sources and the schedule."""

    model: dict[str, Any] = Field(
        default_factory=lambda: {"name": "ecg_mae_tiny", "fs": 100.0, "patch_size": 50},
        description="registered model name plus overrides of its config (cardiodistill.models)",
    )
    objective: Literal["mae", "contrastive", "clocs"] = Field(
        "mae", description="mae (masked autoencoder), contrastive (SimCLR) or clocs (segments and leads of one record)")
    sources: list[EcgSourceConfig] = Field(
        default_factory=lambda: [EcgSourceConfig(kind="synth", patients=300)], min_length=1
    )
    band: tuple[float, float] | None = DEFAULT_BAND
    val_fraction: float = Field(0.02, ge=0, lt=1, description="records held out for reconstruction metrics")
    cache_dir: str | None = Field(None, description="window cache folder (default: <run>/windows)")
    temperature: float = Field(0.1, gt=0, description="contrastive: InfoNCE temperature")
    projection_dim: int = Field(128, ge=8, description="contrastive: projection head output")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1.5e-3, max_steps=300, warmup_steps=30))


class EcgEvalConfig(_Strict):
    """Downstream evaluation of an ECG encoder on a labelled PTB-XL-style folder."""

    data: str | None = Field(None, description="a PTB-XL folder (either layout); --data on the command line")
    task: str = "superdiagnostic"
    train_folds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    eval_folds: list[int] = Field(default_factory=lambda: [9])
    lead_sets: list[str] = Field(default_factory=lambda: ["12", "limb6", "I+II", "I"])
    label_fractions: list[float] = Field(default_factory=lambda: [0.1, 1.0])
    methods: list[Literal["linear", "finetune", "scratch", "supervised", "baselines"]] = Field(
        default_factory=lambda: ["linear", "finetune", "scratch", "supervised", "baselines"]
    )
    supervised_model: str = Field("xresnet1d_small", description="the supervised CNN baseline (registry name)")
    baselines: list[str] = Field(default_factory=lambda: ["resnet1d_wang", "inception1d"],
                                 description="method 'baselines': the field's standard supervised models, trained "
                                             "like 'supervised' (PTB-XL: resnet1d_wang, inception1d, xresnet1d101)")
    epochs: int = Field(20, ge=1, description="fine-tune / scratch / supervised training epochs")
    min_steps: int = Field(100, ge=1, description="trained runs take at least this many steps, however few the labels")
    lr: float = Field(3e-4, gt=0, description="peak learning rate of the transformer runs (AdamW, cosine)")
    finetune_lr_scale: float = Field(1.0, gt=0, le=1, description="method finetune: the pretrained encoder trains at "
                                                                  "this fraction of lr, its new head at lr")
    supervised_lr: float = Field(1e-3, gt=0, description="peak learning rate of the supervised CNN")
    weight_decay: float = Field(0.05, ge=0)
    batch_size: int = Field(32, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    linear_c: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0],
                                  description="linear probe: inverse L2 strengths tried by inner CV on the training set")
    bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    repeats: int = Field(1, ge=1, description="runs of every cell with seeds seed, seed + 1, ... (each its own label "
                                              "subset below 100 % and its own initialisation): a cell reports the "
                                              "mean over them, a paired difference the mean of the runs' differences")


class VideoSourceConfig(_Strict):
    """Where echo / cine-MR clips come from (see :func:`cardiodistill.data.video_clips.source_videos`)."""

    kind: Literal["synth", "cohort", "files"]
    path: str | None = None
    name: str | None = None
    patients: int = Field(200, ge=1, description="synth: patients to simulate")
    seed: int = Field(0, description="synth: cohort seed")
    pattern: str = Field("**/*", description="files: glob under path (only video files are read)")
    max_videos: int | None = Field(None, ge=1)
    clips_per_video: int = Field(1, ge=1, description="windows of whole cycles taken per video, spread over it")


class VideoPretrainConfig(_Strict):
    """Stage 1 for echo / cine MR: self-supervised pretraining of a video encoder."""

    model: dict[str, Any] = Field(
        default_factory=lambda: {"name": "video_mae_tiny"},
        description="registered model name plus overrides (size, frames, cycles, tubelet, ...)",
    )
    objective: Literal["mae", "contrastive"] = "mae"
    sources: list[VideoSourceConfig] = Field(default_factory=lambda: [VideoSourceConfig(kind="synth")])
    val_fraction: float = Field(0.05, ge=0, lt=1, description="videos held out for validation loss")
    cache_dir: str | None = Field(None, description="clip cache folder (default: <run>/clips)")
    temperature: float = Field(0.1, gt=0, description="contrastive: InfoNCE temperature")
    projection_dim: int = Field(128, ge=8, description="contrastive: projection head output")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1.5e-3, batch_size=32, max_steps=300,
                                                                   warmup_steps=30))


class VideoEvalConfig(_Strict):
    """Frozen-encoder evaluation of a video encoder on a labelled (simulated) cohort."""

    data: VideoSourceConfig = Field(
        default_factory=lambda: VideoSourceConfig(kind="synth", patients=400, seed=101),
        description="labelled videos: a simulated cohort (in memory, or a folder written by synth)",
    )
    conditions: list[str] = Field(
        default_factory=lambda: ["reduced_ef", "mi", "valve_disease", "lvh", "af"],
        description="binary labels probed (manifest dx_* columns, without the prefix)",
    )
    test_fraction: float = Field(0.3, gt=0, lt=1, description="patients held out for testing (by a hash of the id)")
    label_fractions: list[float] = Field(default_factory=lambda: [0.1, 0.3, 1.0],
                                         description="nested fractions of the training patients given labels")
    linear_c: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0],
                                  description="logistic probe: C values tried by CV on the training labels")
    methods: list[Literal["probe", "finetune", "scratch"]] = Field(
        default_factory=lambda: ["probe"],
        description="probe: linear / ridge probes on frozen embeddings (fast); finetune: encoder + head trained "
                    "end to end from the pretrained weights; scratch: the same from random weights",
    )
    baselines: list[Literal["random_init", "pixels"]] = Field(
        default_factory=lambda: ["random_init", "pixels"],
        description="probe: also probe these (random_init: the same architecture, untrained; pixels: the prepared "
                    "clip's brightness and motion maps, no model)",
    )
    readout: Literal["mean", "mean+temporal_std", "regional"] = Field(
        "mean+temporal_std",
        description="probe features of an encoder: the pooled embedding, or it and the tokens' SD over time, or "
                    "(regional) both statistics in each quarter of the token grid",
    )
    epochs: int = Field(30, ge=1, description="finetune / scratch: training epochs")
    min_steps: int = Field(120, ge=1, description="finetune / scratch: at least this many steps, however few labels")
    lr: float = Field(1e-3, gt=0, description="finetune / scratch: peak learning rate (AdamW, cosine); 3e-4 underfit")
    embedding_map: Literal["pca", "tsne"] = "tsne"
    batch_size: int = Field(32, ge=1)
    bootstrap: int = Field(1000, ge=0)
    seed: int = 0


class MaskingConfig(_Strict):
    """Joint masked modelling: what the fusion encoder is not shown, per modality."""

    ecg_ratio: float = Field(0.7, ge=0, lt=1, description="share of ECG lead-patches hidden")
    ecg_lead_prob: float = Field(0.25, ge=0, lt=1, description="chance each present lead is hidden whole")
    echo_frame_ratio: float = Field(0.5, ge=0, lt=1, description="share of echo time slices (frames) hidden whole")
    echo_ratio: float = Field(0.5, ge=0, lt=1, description="share of the remaining echo tubelets hidden")
    labs_ratio: float = Field(0.3, ge=0, lt=1, description="share of measured labs hidden")


class AlignConfig(_Strict):
    """Stage 2: cross-modal alignment on paired, unlabelled studies."""

    objectives: list[Literal["clip", "clip_loo", "temporal", "multimae"]] = Field(
        default_factory=lambda: ["clip", "temporal", "multimae"], min_length=1,
        description="clip: pairwise CLIP between modality encoders; clip_loo: each modality against the mean of the "
                    "others; temporal: ECG at R-peak / T end vs echo at end-diastole / end-systole; multimae: joint "
                    "masked modelling with per-modality cross-attention decoders",
    )
    weights: dict[str, float] = Field(default_factory=dict, description="loss weight per objective (default 1)")
    modalities: list[Literal["ecg", "echo", "labs", "note"]] = Field(
        default_factory=lambda: ["ecg", "echo", "labs", "note"], min_length=1)
    ecg_encoder: str | None = Field(None, description="stage-1 ECG encoder.pt (None: a fresh ecg_model)")
    video_encoder: str | None = Field(None, description="stage-1 video encoder.pt (None: a fresh video_model)")
    ecg_model: dict[str, Any] = Field(default_factory=lambda: {"name": "ecg_vit_tiny", "fs": 100.0, "patch_size": 50})
    video_model: dict[str, Any] = Field(default_factory=lambda: {"name": "video_vit_tiny"})
    labs_model: dict[str, Any] = Field(default_factory=lambda: {"name": "labs_encoder"})
    note_model: dict[str, Any] = Field(default_factory=lambda: {"name": "note_encoder"})
    fusion: dict[str, Any] = Field(default_factory=lambda: {"dim": 192, "depth": 2, "heads": 4, "proj_dim": 128},
                                   description="fusion transformer sizes (cardio_fusion options)")
    decoder_dim: int = Field(128, ge=8, description="multimae: width of the cross-attention decoders")
    decoder_depth: int = Field(1, ge=1)
    temperature: float = Field(0.1, gt=0, description="contrastive temperature (initial value if learned)")
    learn_temperature: bool = True
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    modality_dropout: float = Field(0.25, ge=0, lt=1, description="multimae: chance each modality is hidden whole")
    encoder_lr_scale: float = Field(0.3, gt=0, le=1, description="learning-rate factor of pretrained encoders")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="training studies held out to watch the losses")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4, batch_size=32, max_steps=2000,
                                                                   warmup_steps=100))


class FinetuneConfig(_Strict):
    """Stage 3a: the multimodal teacher on the labelled studies."""

    mode: Literal["finetune", "probe"] = Field(
        "finetune", description="finetune: encoders and heads train; probe: the aligned model is frozen, heads train")
    labelled: float = Field(0.25, gt=0, le=1,
                            description="share of the training split that has labels (the first user: 5k of 20k)")
    outputs: list[str] = Field(
        default_factory=lambda: ["triage", "reduced_ef", "mi", "af", "lvh", "valve_disease", "ischaemia",
                                 "hyperkalaemia", "lbbb", "rbbb"],
        description="binary outputs: triage, then manifest dx_* columns without the prefix",
    )
    modalities: list[Literal["ecg", "echo", "labs", "note"]] = Field(
        default_factory=lambda: ["ecg", "echo", "labs", "note"], min_length=1)
    modality_dropout: float = Field(0.4, ge=0, lt=1, description="robustness to missing modalities")
    head_init: Literal["probe", "random"] = Field(
        "probe", description="probe: fit the heads on the frozen embedding first, then train (LP-FT); random: SGD only")
    probe_c: float = Field(0.1, gt=0, description="head_init probe: inverse L2 strength of the logistic heads")
    probe_grid: list[PositiveFloat] = Field(
        default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        description="head_init probe: each output's inverse L2 strength is the one of these with the lowest validation "
                    "loss (empty, or no validation studies: probe_c for all)")
    keep_probe: bool = Field(
        True, description="head_init probe, mode finetune: keep the probe start rather than the fine-tuned teacher "
                          "when its validation loss is lower (the multimodal teachers' fine-tuning lost to it on "
                          "the CPU presets, docs/benchmarks.md)")
    lvef_weight: float = Field(1.0, ge=0)
    encoder_lr_scale: float = Field(0.3, gt=0, le=1)
    freeze_norm_stats: bool = Field(
        False, description="mode finetune: batch-norm layers keep the running statistics the probe start was fitted "
                           "under instead of moving to the training batches' (and the heads' standardisation is not "
                           "recalibrated at the end)")
    fresh_encoders: list[Literal["labs", "note"]] = Field(
        default_factory=lambda: ["labs"],
        description="encoders the teacher starts afresh rather than from stage 2 (they have no stage 1): the aligned "
                    "labs encoder is a worse start than a new one (docs/benchmarks.md)")
    epochs: int = Field(20, ge=1)
    min_steps: int = Field(100, ge=1)
    label_fractions: list[float] = Field(default_factory=lambda: [0.1, 0.3, 1.0],
                                         description="evaluate: the label-fraction curve (probe mode, nested subsets)")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, batch_size=32, warmup_steps=20))


class DistillConfig(_Strict):
    """Stage 3b: the 1-6 lead mobile-ECG student."""

    leads: list[Literal[1, 2, 6]] = Field(default_factory=lambda: [1, 2, 6], min_length=1,
                                          description="students to train: lead I; I and II; the six limb leads")
    backbone: dict[str, Any] = Field(default_factory=lambda: {"name": "student_cnn"},
                                     description="student_cnn (compact 1-D CNN), ecg_encoder (the teacher's ECG encoder) "
                                                 "or pretrained (path: a stage-1 encoder.pt, e.g. ecg_cnn under clocs)")
    label: float = Field(1.0, ge=0, description="weight of the hard labels (labelled studies)")
    soft: float = Field(1.0, ge=0, description="weight of the teacher's soft targets (all training studies)")
    embedding: float = Field(0.5, ge=0, description="weight of matching the teacher's embedding")
    lvef: float = Field(1.0, ge=0, description="weight of LVEF (label where known, teacher's everywhere)")
    temperature: float = Field(2.0, gt=0, description="soft-target temperature")
    unlabelled: bool = Field(True, description="train on unlabelled studies too, with the teacher's targets")
    head_init: Literal["random", "probe"] = Field(
        "random", description="a student from a pretrained backbone (array students): probe fits its output head "
                              "on the frozen embedding of the labelled training recordings first (LP-FT; inverse L2 "
                              "strength from finetune.probe_grid on validation, else finetune.probe_c); random: SGD")
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="a student from a pretrained backbone: layer-wise learning-rate decay (as in "
                                     "BEiT and MAE fine-tuning): the backbone's top layer trains at "
                                     "finetune.encoder_lr_scale times the rate, each layer below at layer_decay times "
                                     "the one above; 1: one rate")
    epochs: int = Field(30, ge=1)
    min_steps: int = Field(200, ge=1)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-3, batch_size=64, warmup_steps=20,
                                                                   weight_decay=0.01))


class PipelineConfig(_Strict):
    """The paired cohort all of stages 2 and 3 read, and the evidence they report."""

    cohort: str | None = Field(None, description="a cohort folder (manifest.csv + files); demo: the simulated one")
    cache_dir: str | None = Field(None, description="paired cache folder (default: <cohort>/cache)")
    workers: int = Field(1, ge=1, description="processes reading files into the paired cache")
    bootstrap: int = Field(1000, ge=0)
    threshold: Literal["youden", "f1", "sensitivity"] = Field("youden", description="operating point, chosen on val")
    failures: int = Field(6, ge=0, description="failure examples shown in the report")
    seed: int = 0


class PretrainSection(_Strict):
    ecg: EcgPretrainConfig = Field(default_factory=EcgPretrainConfig)
    video: VideoPretrainConfig = Field(default_factory=VideoPretrainConfig)


class EvaluateSection(_Strict):
    ecg: EcgEvalConfig = Field(default_factory=EcgEvalConfig)
    video: VideoEvalConfig = Field(default_factory=VideoEvalConfig)


class Config(_Strict):
    preset: str = "default"
    synth: SynthConfig = Field(default_factory=SynthConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)


# --------------------------------------------------------------------------------------------
# presets and overrides


def preset_names() -> list[str]:
    folder = resources.files("cardiodistill") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path | Any, label: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{label}: not valid YAML{where}") from None
    except OSError as err:
        raise ConfigError(f"{label}: cannot read ({err.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: a preset must be a YAML mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base``: mappings merge key by key, anything else (lists too) replaces, and so does a
    model spec that names another model (``{name: ...}``: the old model's keys mean nothing to the new one)."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            renamed = "name" in value and "name" in old and value["name"] != old["name"]
            out[key] = value if renamed else _merge(old, value)
        else:
            out[key] = value
    return out


def load_preset(preset: str, _seen: tuple[str, ...] = ()) -> dict:
    """Return the raw mapping of a named preset or of a YAML file path.

    A preset may start from another one: ``extends: quick`` lays its own keys over that preset's (:func:`_merge`),
    so a preset sized for one job states only what it changes."""
    if preset in _seen:
        raise ConfigError(f"preset {preset!r} extends itself ({' -> '.join((*_seen, preset))})")
    if preset.endswith((".yaml", ".yml")) or "/" in preset:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"{preset}: no such preset file")
        data = _read_yaml(path, preset)
    else:
        resource = resources.files("cardiodistill") / "configs" / f"{preset}.yaml"
        if not resource.is_file():
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())} or give a YAML path")
        data = _read_yaml(resource, f"preset {preset}")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"preset {preset}: extends must name one preset, got {base!r}")
        inherited = load_preset(base, (*_seen, preset))
        inherited.pop("preset", None)
        data = _merge(inherited, data)
    data.setdefault("preset", Path(preset).stem)
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested mapping in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML") from None
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(err: ValidationError, label: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{label}: {loc}: {msg}{more}"


def build_config(data: dict, label: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, label)) from None


def load_config(preset: str = "quick", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a preset name or YAML path plus ``key=value`` overrides."""
    data = load_preset(preset)
    for assignment in overrides:
        apply_override(data, assignment)
    return build_config(data, label=f"preset {preset}" + (" with overrides" if overrides else ""))


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
