"""Stages 2 and 3 on one paired cohort: the jobs behind ``align``, ``finetune``, ``distill`` and ``demo``.

A cohort folder (``manifest.csv`` + files, as :mod:`cardiodistill.synth` writes or a team exports)
is read once into a :class:`~cardiodistill.data.paired.PairedCache` shaped for the encoders, and
split by the manifest's ``split`` column:

* ``train``: stage 2 aligns on all of it (no labels needed); a deterministic ``finetune.labelled``
  share of it (by a hash of the patient id) keeps its labels - the first user's 5k of 20k - and
  the rest is unlabelled for stage 3 (the student still learns the teacher's outputs there);
* ``val``: labelled; the validation losses, the operating threshold and the calibration
  temperature are chosen here;
* ``test``: held out from every stage; every reported figure comes from it.

Each job writes a run folder and resumes from its last checkpoint; :func:`run_pipeline` chains
them (stage 1 included) into one folder, skipping what is already done.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import Config
from .data.ecg_windows import WindowSpec
from .data.paired import PairedCache, PairedDataset, PairedSpec, build_paired_cache
from .errors import ConfigError, DataError
from .io.atomic import atomic_path, write_json_atomic
from .models import create_model, model_from_config
from .models.labs import LabNormaliser
from .train.align import AlignModule
from .train.checkpoints import read_model_file, save_model
from .train.distill import StudentModule
from .train.engine import start_job
from .train.pretrain import resolve_model_config
from .train.stages import fit_stage, steps_for_epochs
from .train.teacher import (
    TeacherModule,
    WithTargets,
    init_heads_from_probe,
    predict_studies,
    recalibrate_standardise,
)
from .train.video import clip_spec

__all__ = ["Cohort", "open_cohort", "run_align", "run_distill", "run_finetune", "student_leads"]

Progress = Callable[[str, int, int | None], None]  # (task, advance, total)
LIMB_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF")


def _labelled(patient_ids, share: float) -> np.ndarray:
    return np.array([zlib.crc32(str(p).encode()) % 100_000 < share * 100_000 for p in patient_ids], dtype=bool)


@dataclass
class Cohort:
    """A paired cache with its splits and training targets (module doc).

    ``targets [N, C]`` (float32): the binary ``outputs`` (triage first, then diagnoses), NaN where
    a study is unlabelled (unlabelled training studies, or a missing label); ``lvef [N]`` in %,
    NaN likewise; ``labels`` the same without the hiding (for evaluation on val / test only).
    """

    cache: PairedCache
    splits: dict[str, np.ndarray]
    outputs: list[str]
    labels: np.ndarray
    lvef_labels: np.ndarray
    targets: np.ndarray
    lvef: np.ndarray
    lab_stats: dict[str, Any]

    @property
    def table(self):
        return self.cache.table

    def dataset(self, split: str | np.ndarray, modalities=("ecg", "mobile", "echo", "labs", "note")) -> PairedDataset:
        indices = self.splits[split] if isinstance(split, str) else split
        return PairedDataset(self.cache, indices, modalities=modalities)

    def lvef_stats(self) -> tuple[float, float]:
        known = self.lvef[self.splits["labelled"]]
        known = known[np.isfinite(known)]
        return (float(known.mean()), float(known.std() + 1e-6)) if len(known) > 1 else (55.0, 10.0)

    def with_targets(self, dataset: PairedDataset, extra: Mapping[str, np.ndarray] | None = None) -> WithTargets:
        mean, std = self.lvef_stats()
        return WithTargets(dataset, {"targets": self.targets, "lvef_z": (self.lvef - mean) / std, **(extra or {})})


def paired_spec(ecg_config: Mapping[str, Any], video_config: Mapping[str, Any]) -> PairedSpec:
    """The cache spec the two encoders want (rate, length and band of the ECG; the video clip)."""
    spec = WindowSpec(float(ecg_config["fs"]), float(ecg_config.get("seconds", 10.0)))
    return PairedSpec(ecg=spec, clip=clip_spec(video_config))


def open_cohort(cfg: Config, cohort: str | Path, spec: PairedSpec, progress: Progress | None = None) -> Cohort:
    """Build (or reuse) the paired cache of ``cohort`` for ``spec`` and split it (module doc)."""
    cohort = Path(cohort)
    if not (cohort / "manifest.csv").is_file():
        raise DataError("not a cohort folder (no manifest.csv)", cohort)
    key = hashlib.blake2b(json.dumps(spec.to_dict(), sort_keys=True).encode(), digest_size=4).hexdigest()
    folder = Path(cfg.pipeline.cache_dir) if cfg.pipeline.cache_dir else cohort / "cache" / f"paired-{key}"
    total = len(pd.read_csv(cohort / "manifest.csv", usecols=[0]))
    done = [0]

    def step(n: int) -> None:  # the cache reports studies done so far; the bar wants increments
        if progress is not None:
            progress("reading the cohort", n - done[0], total)
        done[0] = n

    cache = build_paired_cache(cohort, folder, spec, progress=step, workers=cfg.pipeline.workers)
    table = cache.table
    split = table["split"].astype(str).to_numpy()
    labelled = _labelled(table["patient_id"], cfg.finetune.labelled) & (split == "train")
    splits = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    splits["labelled"] = np.flatnonzero(labelled)
    if min(len(splits["train"]), len(splits["val"]), len(splits["test"])) == 0:
        raise DataError("the manifest's split column needs train, val and test studies", cohort / "manifest.csv")

    outputs = list(cfg.finetune.outputs)
    columns = []
    for name in outputs:
        if name == "triage":
            columns.append(table["triage"].to_numpy(np.float32))
        elif name in cache.dx_names or f"dx_{name}" in cache.dx_names:
            columns.append(table[name if name in cache.dx_names else f"dx_{name}"].to_numpy(np.float32))
        else:
            raise ConfigError(f"finetune.outputs: {name!r} is neither triage nor a diagnosis of the cohort "
                              f"({', '.join(c.removeprefix('dx_') for c in cache.dx_names)})")
    labels = np.stack(columns, 1)
    lvef_labels = table["lvef"].to_numpy(np.float32)
    hidden = (split == "train") & ~labelled
    targets = np.where(hidden[:, None], np.nan, labels).astype(np.float32)
    lvef = np.where(hidden, np.nan, lvef_labels).astype(np.float32)
    labs = cache.load("labs")[splits["train"]]
    lab_stats = LabNormaliser().fit(labs, cache.lab_names).to_dict()
    return Cohort(cache, splits, outputs, labels, lvef_labels, targets, lvef, lab_stats)


def _val_holdout(cohort: Cohort, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training studies for stage 2, minus a hashed ``fraction`` held out to watch its losses."""
    train = cohort.splits["train"]
    held = _labelled(cohort.table["patient_id"].to_numpy()[train], fraction)
    return train[~held], train[held]


# ----------------------------------------------------------------------------------- stage 2


def encoder_config(path: str | Path | None, fallback: Mapping[str, Any], section: str) -> tuple[dict, dict | None]:
    """``(model_config, state_dict or None)`` of a stage-1 encoder file, or of a fresh ``fallback``."""
    if path is None:
        return resolve_model_config(dict(fallback), section), None
    data = read_model_file(path)
    config = dict(data["model_config"])
    if "mae" in str(config.get("name", "")):
        raise ConfigError(f"{path}: give the stage-1 encoder.pt, not the whole masked autoencoder")
    return config, data["state_dict"]


def fusion_config(cfg: Config, cohort: Cohort, ecg: Mapping, video: Mapping) -> dict[str, Any]:
    """The ``cardio_fusion`` model config for this cohort (encoders, lab statistics, sizes): the
    modalities of ``align.modalities`` that at least one study has."""
    a = cfg.align
    labs = {**resolve_model_config(dict(a.labs_model), "align.labs_model"), "n_labs": len(cohort.cache.lab_names)}
    note = resolve_model_config(dict(a.note_model), "align.note_model")
    present = {m for m in ("ecg", "echo", "labs", "note") if cohort.cache.present[m].any()}
    modalities = [m for m in a.modalities if m in present and (m != "labs" or cohort.cache.lab_names)]
    if not modalities:
        raise DataError(f"no study has any of the modalities {list(a.modalities)}", cohort.cache.folder)
    model = create_model("cardio_fusion", ecg=dict(ecg), echo=dict(video), labs=labs, note=note,
                         lab_stats=cohort.lab_stats, modalities=modalities, **a.fusion)
    return model.model_config


def unaligned_fusion(cfg: Config, cohort: Cohort, ecg: tuple[dict, dict | None], video: tuple[dict, dict | None]
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state)`` of a fusion model that skips stage 2: the (stage-1) encoders as they
    are under an untrained fusion transformer - the teacher's starting point without alignment."""
    config = fusion_config(cfg, cohort, ecg[0], video[0])
    model = model_from_config(config)
    for modality, (_, state) in (("ecg", ecg), ("echo", video)):
        if state is not None and modality in model.encoders:
            model.encoders[modality].load_state_dict(state)
    return config, model.state_dict()


def run_align(cfg: Config, cohort: Cohort, out: str | Path, *, ecg: tuple[dict, dict | None],
              video: tuple[dict, dict | None], show_bar: bool = True) -> dict[str, Any]:
    """Stage 2 in run folder ``out``: train the fusion model, write ``out/aligned.pt``."""
    out = Path(out)
    start_job(cfg.trainer)
    a, o = cfg.align, cfg.align.optim
    states = {m: s for m, (_, s) in (("ecg", ecg), ("echo", video)) if s is not None and m in a.modalities}
    module = AlignModule(
        fusion_config(cfg, cohort, ecg[0], video[0]), objectives=a.objectives, weights=a.weights,
        temperature=a.temperature, learn_temperature=a.learn_temperature, masking=a.masking.model_dump(),
        modality_dropout=a.modality_dropout, decoder_dim=a.decoder_dim, decoder_depth=a.decoder_depth, lr=o.lr,
        weight_decay=o.weight_decay, betas=o.betas, warmup_steps=o.warmup_steps, max_steps=o.max_steps,
        seed=cfg.trainer.seed, encoder_lr_scale=a.encoder_lr_scale, encoder_states=states,
    )
    train, val = _val_holdout(cohort, a.val_fraction)
    result = fit_stage(module, cohort.dataset(train), cohort.dataset(val), o, cfg.trainer, out,
                       max_steps=o.max_steps, show_bar=show_bar)
    if result["is_global_zero"]:
        save_model(module.model, out / "aligned.pt", objectives=list(a.objectives), steps=result["steps"],
                   pretrained=sorted(states))
    return {"steps": result["steps"], "metrics": result["metrics"], "n_train": len(train), "n_val": len(val)}


# ----------------------------------------------------------------------------------- stage 3a


def _subset_state(state: Mapping[str, torch.Tensor], old: Sequence[str], new: Sequence[str]) -> dict[str, torch.Tensor]:
    """A fusion state dict for the modalities ``new`` (a subset of ``old``): the parts of dropped
    modalities go, and the modality embedding keeps the rows of the kept ones."""
    dropped = [m for m in old if m not in new]
    parts = ("encoders.", "to_fusion.", "clip_heads.", "phase_heads.")
    kept = {k: v for k, v in state.items() if not any(k.startswith(p + m + ".") for p in parts for m in dropped)}
    kept["modality_embed"] = state["modality_embed"][[list(old).index(m) for m in new]]
    return kept


def run_finetune(cfg: Config, cohort: Cohort, out: str | Path, *, aligned: str | Path | None = None,
                 base: tuple[dict, dict | None] | None = None, show_bar: bool = True) -> dict[str, Any]:
    """Stage 3a in run folder ``out``: the teacher on the labelled studies, then its outputs on every
    study cached in ``out/teacher_outputs.npz``. ``aligned``: the stage-2 model (None: no stage 2,
    ``base = (fusion_config, state or None)`` is used as it is)."""
    out = Path(out)
    start_job(cfg.trainer)
    f, o = cfg.finetune, cfg.finetune.optim
    if aligned is not None:
        data = read_model_file(aligned)
        fusion, state = dict(data["model_config"]), data["state_dict"]
    elif base is not None:
        fusion, state = base
    else:
        raise ConfigError("finetune needs the aligned model of stage 2 (or a base fusion config)")
    modalities = [m for m in fusion["modalities"] if m in f.modalities]
    if not modalities:
        raise ConfigError(f"finetune.modalities {f.modalities} share nothing with the model's {fusion['modalities']}")
    if modalities != list(fusion["modalities"]):
        if state is not None:
            state = _subset_state(state, fusion["modalities"], modalities)
        fusion = {**fusion, "modalities": modalities}
    mean, std = cohort.lvef_stats()
    config = create_model("cardio_teacher", fusion=fusion, outputs=cohort.outputs, lvef_mean=mean,
                          lvef_std=std).model_config
    module = TeacherModule(config, mode=f.mode, modality_dropout=f.modality_dropout, lvef_weight=f.lvef_weight,
                           lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, warmup_steps=o.warmup_steps,
                           max_steps=(steps := steps_for_epochs(len(cohort.splits["labelled"]), o.batch_size,
                                                                 f.epochs, f.min_steps)),
                           seed=cfg.trainer.seed, encoder_lr_scale=f.encoder_lr_scale, fusion_state=state)
    train = cohort.with_targets(cohort.dataset("labelled"))
    val = cohort.with_targets(cohort.dataset("val"))
    if f.head_init == "probe":  # a resumed run's checkpoint overwrites these weights with its own
        init_heads_from_probe(module.model, train, c=f.probe_c)
    result = fit_stage(module, train, val, o, cfg.trainer, out, max_steps=steps, show_bar=show_bar)
    if result["is_global_zero"]:
        recalibrate_standardise(module.model, train, modality_dropout=f.modality_dropout, seed=cfg.trainer.seed)
        save_model(module.model, out / "teacher.pt", mode=f.mode, steps=result["steps"],
                   n_labelled=len(cohort.splits["labelled"]), aligned=str(aligned) if aligned else None)
        cache_teacher_outputs(module.model, cohort, out / "teacher_outputs.npz")
    return {"steps": result["steps"], "metrics": result["metrics"], "n_labelled": len(cohort.splits["labelled"])}


def cache_teacher_outputs(teacher, cohort: Cohort, path: Path, batch_size: int = 64) -> Path:
    """The teacher's ``logits``, standardised ``lvef`` and fused ``embedding`` for every study, in
    cache order, written atomically (what every student of this teacher trains from)."""
    teacher.eval()
    outputs = predict_studies(teacher, cohort.dataset(np.arange(len(cohort.cache))), batch_size=batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **outputs)
    return path


# ----------------------------------------------------------------------------------- stage 3b


def student_leads(n: int) -> tuple[str, ...]:
    """The handheld leads a student of ``n`` leads reads: I; I and II; the six limb leads."""
    if n not in (1, 2, 6):
        raise ConfigError(f"students read 1, 2 or 6 limb leads, not {n}")
    return LIMB_ORDER[:n]


def student_config(cfg: Config, n_leads: int, embed_dim: int, cohort: Cohort,
                   ecg_encoder: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``ecg_student`` config: ``distill.backbone`` for ``n_leads`` handheld leads (the name
    ``ecg_encoder`` means the teacher's ECG transformer, whose config is ``ecg_encoder``)."""
    spec = cohort.cache.spec.ecg
    if cfg.distill.backbone.get("name") == "ecg_encoder":
        if ecg_encoder is None:
            raise ConfigError("distill.backbone ecg_encoder needs a teacher with an ECG encoder")
        backbone = {"name": "ecg_encoder_backbone", "encoder": dict(ecg_encoder), "in_leads": n_leads}
    else:
        backbone = resolve_model_config({**cfg.distill.backbone, "in_leads": n_leads}, "distill.backbone")
    backbone["fs"], backbone["seconds"] = spec.fs, spec.seconds
    mean, std = cohort.lvef_stats()
    return create_model("ecg_student", backbone=backbone, outputs=cohort.outputs, embed_dim=embed_dim,
                        lvef_mean=mean, lvef_std=std).model_config


def _teacher_ecg_encoder(teacher_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The (fine-tuned) ECG encoder of a teacher: its config and weights."""
    data = read_model_file(teacher_dir / "teacher.pt")
    prefix = "fusion.encoders.ecg."
    state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    return data["model_config"]["fusion"]["ecg"], state


def run_distill(cfg: Config, cohort: Cohort, teacher_dir: str | Path | None, out: str | Path, *, n_leads: int,
                distil: bool = True, show_bar: bool = True) -> dict[str, Any]:
    """Stage 3b in run folder ``out``: an ``n_leads`` student from the teacher's cached outputs in
    ``teacher_dir`` (``distil=False``: the same student from the labels alone); writes
    ``out/student.pt``."""
    out = Path(out)
    start_job(cfg.trainer)
    d, o = cfg.distill, cfg.distill.optim
    extra, embed_dim = {}, 0
    if distil:
        if teacher_dir is None:
            raise ConfigError("distillation needs the teacher's run folder (teacher_outputs.npz)")
        path = Path(teacher_dir) / "teacher_outputs.npz"
        if not path.is_file():
            raise DataError("no teacher_outputs.npz: run finetune first", teacher_dir)
        with np.load(path) as saved:
            order = np.argsort(saved["index"])
            embedding = saved["embedding"][order]
            extra = {"t_logits": saved["logits"][order], "t_lvef": saved["lvef"][order]}
        if len(order) != len(cohort.cache):
            raise DataError("teacher_outputs.npz was made for another cohort", path)
        # Matched after centring on the training mean: the raw fused embeddings share a large common
        # direction, so their cosine is near 1 for any pair and matching them teaches nothing.
        extra["t_embedding"] = embedding - embedding[cohort.splits["train"]].mean(0)
        embed_dim = extra["t_embedding"].shape[1]
    encoder, backbone_state = None, None
    if d.backbone.get("name") == "ecg_encoder":
        if teacher_dir is None:
            raise ConfigError("distill.backbone ecg_encoder starts from the teacher's ECG encoder: give --teacher")
        encoder, state = _teacher_ecg_encoder(Path(teacher_dir))
        backbone_state = {f"encoder.{k}": v for k, v in state.items()}
    config = student_config(cfg, n_leads, embed_dim, cohort, encoder)
    weights = dict(label=d.label, soft=d.soft, embedding=d.embedding, lvef=d.lvef) if distil else \
        dict(label=d.label, soft=0.0, embedding=0.0, lvef=d.lvef)
    rows = cohort.splits["train"] if (distil and d.unlabelled) else cohort.splits["labelled"]
    steps = steps_for_epochs(len(rows), o.batch_size, d.epochs, d.min_steps)
    module = StudentModule(config, **weights, temperature=d.temperature, lr=o.lr, weight_decay=o.weight_decay,
                           betas=o.betas, warmup_steps=o.warmup_steps, max_steps=steps, seed=cfg.trainer.seed,
                           backbone_state=backbone_state, encoder_lr_scale=cfg.finetune.encoder_lr_scale)
    train = cohort.with_targets(cohort.dataset(rows, modalities=("mobile",)), extra)
    val = cohort.with_targets(cohort.dataset("val", modalities=("mobile",)), extra)
    result = fit_stage(module, train, val, o, cfg.trainer, out, max_steps=steps, show_bar=show_bar)
    if result["is_global_zero"]:
        save_model(module.model, out / "student.pt", leads=list(student_leads(n_leads)), distilled=distil,
                   steps=result["steps"], n_train=len(rows))
    return {"steps": result["steps"], "metrics": result["metrics"], "n_train": len(rows), "leads": n_leads}


# ----------------------------------------------------------------------------------- the whole pipeline


def fusion_of(path: str | Path) -> dict[str, Any]:
    """The ``cardio_fusion`` config inside an aligned model or a teacher file."""
    config = read_model_file(path)["model_config"]
    return config["fusion"] if config.get("name") == "cardio_teacher" else config


def spec_of(fusion: Mapping[str, Any]) -> PairedSpec:
    """The paired-cache spec a fusion model was built for (its ECG and video encoders' inputs)."""
    ecg = fusion.get("ecg") or {"fs": 100.0, "seconds": 10.0}
    echo = fusion.get("echo") or resolve_model_config({"name": "video_vit_tiny"}, "echo")
    return paired_spec(ecg, echo)


def stage1_sources_differ(cfg: Config) -> None:
    """Stage 1 must not see the cohort's test studies: its simulated sources need another seed."""
    for kind, sources in (("ecg", cfg.pretrain.ecg.sources), ("video", cfg.pretrain.video.sources)):
        for source in sources:
            if source.kind == "synth" and source.seed == cfg.synth.seed:
                raise ConfigError(f"pretrain.{kind}: a simulated source with the cohort's seed ({cfg.synth.seed}) "
                                  "would pretrain on the test patients; give it another seed")


def run_pipeline(cfg: Config, out: str | Path, *, progress: Progress | None = None, show_bar: bool = True,
                 steps: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stages 1-3, evaluation and report in one folder (the demo); each finished stage is kept.

    ``out/cohort`` must hold a cohort (the demo simulates it first). Writes ``out/stage1-ecg``,
    ``out/stage1-video``, ``out/align``, ``out/teacher``, ``out/student-<n>-lead``,
    ``out/evaluation`` (metrics.json, figures), ``out/report.html`` and ``out/student.onnx`` (the
    first student, when the ``edge`` extra is installed). ``steps(name)`` is told each stage.
    """
    from .evaluate.pipeline_report import write_report
    from .evaluate.triage import evaluate_pipeline
    from .train.ecg import pretrain_ecg
    from .train.video import pretrain_video

    out = Path(out)
    say = steps or (lambda _name: None)
    stage1_sources_differ(cfg)
    summary: dict[str, Any] = {}
    encoders = {}
    for kind, job in (("ecg", pretrain_ecg), ("video", pretrain_video)):
        folder = out / f"stage1-{kind}"
        if not (folder / "encoder.pt").is_file():
            say(f"stage 1: pretraining the {kind} encoder")
            folder.mkdir(parents=True, exist_ok=True)
            summary[f"stage1_{kind}"] = {k: v for k, v in job(cfg, folder, progress=None).items()
                                         if k in ("steps", "metrics")}
        encoders[kind] = encoder_config(folder / "encoder.pt", {}, f"stage-1 {kind} encoder")
    spec = paired_spec(encoders["ecg"][0], encoders["video"][0])
    say("reading the cohort into the paired cache")
    cohort = open_cohort(cfg, out / "cohort", spec, progress)
    if not (out / "align" / "aligned.pt").is_file():
        say("stage 2: cross-modal alignment")
        summary["align"] = run_align(cfg, cohort, out / "align", ecg=encoders["ecg"], video=encoders["video"],
                                     show_bar=show_bar)
    if not (out / "teacher" / "teacher_outputs.npz").is_file():
        say("stage 3: fine-tuning the multimodal teacher")
        summary["teacher"] = run_finetune(cfg, cohort, out / "teacher", aligned=out / "align" / "aligned.pt",
                                          show_bar=show_bar)
    students = {}
    for n in cfg.distill.leads:
        folder = out / f"student-{n}-lead"
        if not (folder / "student.pt").is_file():
            say(f"stage 3: distilling the {n}-lead student")
            summary[f"student_{n}"] = run_distill(cfg, cohort, out / "teacher", folder, n_leads=n, show_bar=show_bar)
        students[f"student, {n} lead{'s' if n > 1 else ''}"] = folder / "student.pt"
    say("evaluating on the held-out test studies")
    p = cfg.pipeline
    results = evaluate_pipeline(cohort, out / "evaluation", teacher=out / "teacher" / "teacher.pt", students=students,
                                aligned=out / "align" / "aligned.pt", label_fractions=cfg.finetune.label_fractions,
                                n_boot=p.bootstrap, rule=p.threshold, failures=p.failures, seed=p.seed)
    name, first = next(iter(students.items()))
    threshold = results["models"][name]["triage"]["threshold"]  # chosen on validation, as in the report
    summary["onnx"] = export_student(first, out / "student.onnx", cohort, thresholds={cohort.outputs[0]: threshold})
    say("writing the report")
    write_report(results, out / "evaluation" / "figures", out / "report.html", config=cfg)
    write_json_atomic(out / "summary.json", summary)
    return {"results": results, "summary": summary}


def student_val_arrays(cohort: Cohort, leads: Sequence[str], split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, len(leads), S] float32, y [N, C])`` of a split's handheld ECG windows (the student's
    input, its leads in order) and binary labels (NaN = unknown): the accuracy gate's validation set."""
    rows = cohort.splits[split]
    order = [cohort.cache.spec.mobile_leads.index(lead) for lead in leads]
    data = cohort.dataset(rows, modalities=("mobile",))
    x = np.stack([np.asarray(data[i]["mobile"], np.float32)[order] for i in range(len(data))])
    return x, cohort.labels[rows].astype(np.float32)


def export_student(path: str | Path, onnx_path: str | Path, cohort: Cohort, *, precision: str = "int8",
                   margin: float = 0.02, thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The student at ``path`` as one ONNX file with its :class:`~cardiodistill.edge.EdgeSpec`, at
    ``precision`` behind the accuracy gate on the cohort's validation studies
    (:func:`~cardiodistill.deploy.export_student_model`): the gate record with ``path``, or
    ``{"error": ...}`` when the graph cannot be exported (the run's other outputs stand)."""
    from .deploy.student import export_student_model
    from .errors import one_line
    from .train.checkpoints import load_model

    x, y = student_val_arrays(cohort, load_model(path).leads)
    try:
        return export_student_model(path, onnx_path, val_x=x, val_y=y, precision=precision, margin=margin,
                                    thresholds=thresholds, provenance={"cohort": str(cohort.cache.folder)})
    except Exception as err:  # noqa: BLE001 - e.g. an operator the exporter lacks; reported, not fatal
        return {"error": one_line(err)}
