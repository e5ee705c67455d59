"""The ``cardiodistill`` command line. Each command is a thin wrapper over a library function.

User mistakes (bad files, bad config keys, a finished run folder in the way) print one line and
exit with status 2; anything else is a bug and keeps its traceback.

Help is plain text (``rich_markup_mode=None``): paragraphs are re-flowed to the terminal's width,
boolean options are plain flags (``--json``, ``--overwrite``) listed without a value, and every
value has a metavar saying what it is (``FILE``, ``FOLDER``, ``N``...). Typer marks a required
argument with braces in the usage line (``{FILE}``).
"""

from __future__ import annotations

import os
import sys

# Idle OpenMP threads sleep instead of spinning. On a busy or small machine spinning threads
# made each small op of a training step wait ~2 ms: 3.4x slower pretraining on 2 shared cores
# (benchmarks/bench_pretrain.py). Must be set before torch is imported; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import __version__
from .config import Config, config_to_yaml, load_config, preset_names
from .deploy.commands import bench_command, export_cmd
from .edge.command import predict_cmd
from .errors import CardiodistillError
from .serve.command import serve_cmd

app = typer.Typer(
    name="cardiodistill",
    help="Distil 12-lead ECG, echo, labs and notes into a small 1-6 lead mobile-ECG triage model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(stderr=True)

PresetOpt = Annotated[str, typer.Option(
    "--preset", "-p", metavar="NAME|YAML", help="Preset name (quick, full) or a YAML file.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override a config value, e.g. --set synth.prevalence.af=0.2 (repeatable)."),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a finished run in the output folder.")]
ShowIdsOpt = Annotated[bool, typer.Option(
    "--show-ids", help="Show the manifest's real patient ids next to their pseudonyms (an explicit opt-in: "
                       "the report then identifies patients).")]
ConfigOpt = Annotated[str, typer.Option(
    "--config", "-c", metavar="NAME|YAML", help="Preset name (quick, full) or a YAML file.")]
RunOutOpt = Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="Run folder.")]


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Distil 12-lead ECG, echo, labs and notes into a small 1-6 lead mobile-ECG triage model."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def _per_source(bar: Progress, what: str):
    """A ``progress(source, done)`` callback that keeps one counting bar per source."""
    tasks: dict[str, int] = {}

    def advance(source: str, done: int) -> None:
        if source not in tasks:
            tasks[source] = bar.add_task(f"{what} {source}", total=None)
        bar.update(tasks[source], completed=done)

    return advance


def _per_task(bar: Progress):
    """A ``progress(task, advance, total)`` callback that keeps one bar per task."""
    tasks: dict[str, int] = {}

    def advance(task: str, n: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bar.add_task(task, total=total)
        bar.advance(tasks[task], n)

    return advance


def _synthesize(config: Config, out: Path, overwrite: bool) -> Path:
    from .runs import finish_run, prepare_run_folder
    from .synth.cohort import write_cohort

    prepare_run_folder(out, config, overwrite=overwrite, kind="cohort")
    with _progress() as bar:
        task = bar.add_task("simulating patients", total=config.synth.patients)
        manifest = write_cohort(config, out, progress=lambda n: bar.advance(task, n))
    if config.synth.stream:
        _write_stream(config, out, str(out / "stream"))
    counts = manifest["split"].value_counts().to_dict()
    finish_run(out, "cohort", patients=len(manifest), splits=counts,
               triage_prevalence=round(float(manifest["triage"].mean()), 4))
    return out


@app.command(short_help="Simulate a paired cohort as clinical files.")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="Folder to write the cohort into.")],
    patients: Annotated[Optional[int], typer.Option(
        metavar="N", help="Number of patients (overrides synth.patients).")] = None,
    seed: Annotated[Optional[int], typer.Option(metavar="N", help="Random seed (overrides synth.seed).")] = None,
    workers: Annotated[Optional[int], typer.Option(metavar="N", help="Processes (overrides synth.workers).")] = None,
    preset: PresetOpt = "quick",
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate a paired cohort (12-lead + mobile ECG, echo, labs, notes, labels) as clinical files.

    Writes WFDB ECGs, multi-frame DICOM echo, labs.csv, notes, timing.jsonl and manifest.csv; with
    --set synth.stream=true (the full preset) also OUT/stream, as `cardiodistill stream` writes it.
    An interrupted run resumes where it stopped when run again with the same arguments.
    """
    overrides = list(set_ or [])
    for key, value in (("patients", patients), ("seed", seed), ("workers", workers)):
        if value is not None:
            overrides.append(f"synth.{key}={value}")
    config = load_config(preset, overrides)
    _synthesize(config, out, overwrite)
    console.print(f"[green]cohort of {config.synth.patients} patients written to[/] {out}")


@app.command(short_help="Run stages 1-3 on a simulated cohort; write a clinical report.")
def demo(
    out: RunOutOpt = Path("runs/demo"),
    preset: PresetOpt = "quick",
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run the whole pipeline on the built-in simulated cohort and write a clinical report.

    Simulates a paired cohort, then stage 1 (ECG and echo encoders pretrained without labels),
    stage 2 (cross-modal alignment), stage 3 (the multimodal teacher on a quarter of the training
    labels, then 1-, 2- and 6-lead handheld-ECG students distilled from it), evaluates everything
    on held-out test patients and writes OUT/report.html, OUT/evaluation/metrics.json and
    OUT/student.onnx. The quick preset takes about 8 minutes on 2 CPU cores; an interrupted demo
    continues from its last finished stage when run again.
    """
    from .runs import finish_run, prepare_run_folder, read_run
    from .stages.demo import run_pipeline

    config = load_config(preset, list(set_ or []))
    prepare_run_folder(out, config, overwrite=overwrite, kind="demo")
    cohort = out / "cohort"
    if read_run(cohort) is None:
        _synthesize(config, cohort, overwrite=False)
    with _progress() as bar:
        result = run_pipeline(config, out, progress=_per_task(bar), show_bar=True,
                              steps=lambda name: console.print(f"[bold cyan]{name}[/]"))
    finish_run(out, "demo", patients=config.synth.patients)
    print(_headline(result["results"]))
    onnx = result["summary"]["onnx"]
    if "error" in onnx:
        console.print(f"[yellow]the student was not exported to ONNX:[/] {escape(onnx['error'])}")
    elif "summary" in onnx:
        console.print(f"export gate: {escape(onnx['summary'])}", highlight=False)
    console.print(f"[green]demo finished:[/] report {out / 'report.html'}")


def _headline(results: dict) -> str:
    """The report's headline table as markdown, for the terminal."""
    from .evaluate.pipeline_report import headline_rows

    rows = headline_rows(results)
    keys = ["model", "urgent referral AUROC", "diagnoses macro AUROC", "LVEF MAE (%)"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


@app.command(short_help="Show what was read from an ECG file or a cine.")
def inspect(
    path: Annotated[Path, typer.Argument(
        metavar="FILE", show_default=False,
        help="An ECG file (WFDB, DICOM waveform, MUSE XML, HL7 aECG, EDF, CSV, NPY; a WFDB record may be named "
             "without .hea) or a cine (DICOM, AVI/MP4, NIfTI).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (R-peak samples included).")] = False,
    png: Annotated[Optional[Path], typer.Option(
        "--png", metavar="FILE", help="Also draw the record on ECG paper (a cine: its preprocessing) to this PNG "
                                      "file; missing folders are created.")] = None,
    fs: Annotated[Optional[float], typer.Option(
        metavar="HZ",
        help="Sampling rate for CSV/NPY ECGs, or frame rate for a cine, when the file does not carry one.")] = None,
    leads: Annotated[Optional[str], typer.Option(
        metavar="LEADS", help="Comma-separated lead names, for CSV/NPY without a header.")] = None,
    units: Annotated[Optional[str], typer.Option(
        metavar="UNITS", help="Amplitude units (mV, uV), for CSV/NPY.")] = None,
) -> None:
    """Show what was read from an ECG file or a cine.

    An ECG: leads, rate, duration, units, quality per lead and R-peaks. A cine: frames, rate, field
    of view, cardiac cycle and the prepared model input. No free-text field of the file is shown.
    """
    import json

    from .edge.predict import record_path
    from .errors import DataError
    from .inspection import format_summary, format_video_summary, plot_summary, summarize_ecg, summarize_video
    from .io import read_ecg

    path = record_path(path)
    if path.is_dir():
        raise DataError("is a folder; inspect reads one file (predict reads folders)", path)
    if _is_cine(path):
        summary = summarize_video(path, png=png, fps=fs)
        print(json.dumps(summary, indent=2) if json_out else format_video_summary(summary))
    else:
        kwargs = {k: v for k, v in (("fs", fs), ("units", units)) if v is not None}
        if leads:
            kwargs["leads"] = [name.strip() for name in leads.split(",")]
        record = read_ecg(path, **kwargs)
        summary = summarize_ecg(record)
        if png is not None:
            plot_summary(record, summary, png)
        print(json.dumps(summary, indent=2) if json_out else format_summary(summary))
    if png is not None:
        console.print(f"figure written to {escape(str(png))}", highlight=False, soft_wrap=True)


def _is_cine(path: Path) -> bool:
    """True for a cine file. The video readers' libraries (av, nibabel) are imported only here, so an
    ``edge`` install, which has neither, inspects ECG files (and reads no cines)."""
    try:
        from .io.video import is_video_file
    except ModuleNotFoundError as err:
        if err.name not in _VIDEO_ONLY:
            raise
        return False
    return is_video_file(path)


EndpointOpt = Annotated[Optional[str], typer.Option(
    "--endpoint-url", metavar="URL", help="An S3-compatible server's address (MinIO, Ceph...) for s3:// streams.")]


def _pretrain(kind: str, job, what: str, config: str, set_: list[str] | None, out: Path, overwrite: bool,
              **kwargs) -> None:
    """Run a stage-1 ``job(cfg, out, progress=..., **kwargs)`` in a run folder, one progress bar per source."""
    from .runs import finish_run, prepare_run_folder

    cfg = load_config(config, list(set_ or []))
    prepare_run_folder(out, cfg, overwrite=overwrite, kind=kind)
    with _progress() as bar:
        summary = job(cfg, out, progress=_per_source(bar, what), **kwargs)
    finish_run(out, kind, **summary)
    console.print(f"[green]pretraining finished after {summary['steps']} steps:[/] {out}")


pretrain_app = typer.Typer(help="Stage 1: self-supervised pretraining of a modality encoder.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(pretrain_app, name="pretrain")


@pretrain_app.command("ecg", short_help="Pretrain the ECG encoder on unlabelled ECGs.")
def pretrain_ecg_cmd(
    out: RunOutOpt = Path("runs/pretrain-ecg"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    stream: Annotated[Optional[str], typer.Option(
        "--stream", metavar="FOLDER|URL",
        help="Train on a stream's 12-lead ECGs instead of pretrain.ecg.sources.")] = None,
    endpoint_url: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Pretrain the lead-agnostic ECG encoder on unlabelled ECGs (masked autoencoder or contrastive).

    Sources (pretrain.ecg.sources) may be PTB-XL, CinC 2017, a simulated cohort or any folder of
    ECG files, with any leads and rates: each is resampled to the model's rate and cut into
    z-scored windows once (a cache in OUT/windows). An interrupted run continues exactly where its
    last checkpoint left it when run again with the same arguments. Writes OUT/mae.pt (or
    model.pt), OUT/encoder.pt, the training log and, for the masked autoencoder, reconstruction
    metrics and a figure on the held-out windows. With --stream (written by `cardiodistill stream` for
    this encoder's input) it trains on the stream's training studies' 12-lead ECGs and watches its
    validation ones.
    """
    from .stages.stage1 import pretrain_ecg

    _pretrain("pretrain-ecg", pretrain_ecg, "windows from", config, set_, out, overwrite,
              stream=_stream_or_none(stream, endpoint_url))


def _stream_or_none(stream: str | None, endpoint_url: str | None):
    if stream is None:
        return None
    from .data.streaming import open_stream

    return open_stream(stream, storage_options=_storage_options(endpoint_url))


@pretrain_app.command("video", short_help="Pretrain a video encoder on unlabelled echo / cine-MR clips.")
def pretrain_video_cmd(
    out: RunOutOpt = Path("runs/pretrain-video"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    stream: Annotated[Optional[str], typer.Option(
        "--stream", metavar="FOLDER|URL",
        help="Train on a stream's echo clips instead of pretrain.video.sources.")] = None,
    endpoint_url: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Pretrain a video encoder on unlabelled echo / cine-MR clips (masked video modelling or SimCLR).

    Sources (pretrain.video.sources) may be the simulator, a simulated cohort or any folder of
    DICOM, AVI/MP4 or NIfTI cines. Each video is decoded once into clips of whole cardiac cycles
    (field of view found, burned-in text and traces blanked, resized, resampled; a cache in
    OUT/clips that holds no patient identifiers). An interrupted run continues exactly where its
    last checkpoint left it. Writes OUT/mae.pt (or model.pt), OUT/encoder.pt and the training log. With
    --stream (written by `cardiodistill stream` for this encoder's input) it trains on the stream's training
    studies' echo clips and watches its validation ones.
    """
    from .stages.stage1 import pretrain_video

    _pretrain("pretrain-video", pretrain_video, "videos from", config, set_, out, overwrite,
              stream=_stream_or_none(stream, endpoint_url))


CohortOpt = Annotated[Path, typer.Option(
    "--cohort", metavar="FOLDER", help="Cohort folder: manifest.csv plus the files it names.")]


def _open(cfg, cohort: Path, fusion: dict):
    from .data.cohort import open_cohort
    from .stages.common import spec_of

    with _progress() as bar:
        return open_cohort(cfg, cohort, spec_of(fusion), _per_task(bar))


def _one_source(cohort: Path | None, stream: str | None) -> None:
    if (cohort is None) == (stream is None):
        raise typer.BadParameter("give one of --cohort and --stream")


def _cohort_or_stream(cfg, cohort: Path | None, stream: str | None, fusion: dict, endpoint_url: str | None):
    """The cohort folder's cache, or the stream, for the encoders of ``fusion`` (:func:`_one_source` checked)."""
    if stream is None:
        return _open(cfg, cohort, fusion)
    from .data.streaming import open_stream
    from .stages.common import spec_of

    return open_stream(stream, spec_of(fusion), storage_options=_storage_options(endpoint_url))


def _stage(kind: str, config: str, set_, out: Path, overwrite: bool):
    from .runs import prepare_run_folder

    cfg = load_config(config, list(set_ or []))
    prepare_run_folder(out, cfg, overwrite=overwrite, kind=kind)
    return cfg


EcgEncoderOpt = Annotated[Optional[Path], typer.Option(
    "--ecg-encoder", help="Stage-1 ECG encoder.pt (default: a fresh encoder).")]
VideoEncoderOpt = Annotated[Optional[Path], typer.Option(
    "--video-encoder", help="Stage-1 video encoder.pt (default: fresh).")]
OptionalCohortOpt = Annotated[Optional[Path], typer.Option(
    "--cohort", metavar="FOLDER", help="Cohort folder: manifest.csv plus the files it names.")]
StreamOpt = Annotated[Optional[str], typer.Option(
    "--stream", metavar="FOLDER|URL", help="Or a stream written by `cardiodistill stream`.")]


def _storage_options(endpoint_url: str | None) -> dict:
    return {"endpoint_url": endpoint_url} if endpoint_url else {}


@app.command("stream", short_help="Write a cohort as a stream: object storage, many GPUs.")
def stream_cmd(
    cohort: CohortOpt,
    out: Annotated[str, typer.Option("--out", "-o", metavar="FOLDER|URL",
                                     help="A folder, or an object-store URL (s3://, gs://, azure://).")],
    ecg_encoder: EcgEncoderOpt = None,
    video_encoder: VideoEncoderOpt = None,
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    endpoint_url: EndpointOpt = None,
    chunk_mb: Annotated[int, typer.Option(min=1, metavar="MB", help="Size of a chunk.")] = 64,
) -> None:
    """Write a cohort folder (manifest.csv + clinical files) as a LitData stream that the stages read with
    --stream: every study preprocessed once for the encoders' inputs (those of --ecg-encoder and
    --video-encoder, else of align.*), one data set per split, and one of the finetune.labelled share of
    the training studies for the teacher. A stream already there from the same cohort is kept."""
    cfg = load_config(config, list(set_ or []))
    _write_stream(cfg, cohort, out, ecg_encoder, video_encoder, endpoint_url, chunk_mb)


def _write_stream(cfg: Config, cohort: Path, out: str, ecg_encoder: str | None = None, video_encoder: str | None = None,
                  endpoint_url: str | None = None, chunk_mb: int = 64) -> None:
    from .data.streaming import write_stream
    from .stages.stage2 import encoder_config

    ecg = encoder_config(ecg_encoder, cfg.align.ecg_model, "align.ecg_model")
    video = encoder_config(video_encoder, cfg.align.video_model, "align.video_model")
    data = _open(cfg, cohort, {"ecg": ecg[0], "echo": video[0]})
    with _progress() as bar:
        task = bar.add_task("writing the stream", total=len(data.table))
        meta = write_stream(data.cache, out, labelled=cfg.finetune.labelled, chunk_bytes=chunk_mb * 1_000_000,
                            storage_options=_storage_options(endpoint_url),
                            progress=lambda done, total: bar.update(task, completed=done))
    counts = ", ".join(f"{n} {split}" for split, n in meta["splits"].items())
    console.print(f"[green]stream of {counts} studies:[/] {out}")


@app.command(short_help="Stage 2: align the modality encoders on paired studies.")
def align(
    cohort: OptionalCohortOpt = None,
    stream: StreamOpt = None,
    out: RunOutOpt = Path("runs/align"),
    ecg_encoder: EcgEncoderOpt = None,
    video_encoder: VideoEncoderOpt = None,
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    endpoint_url: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Stage 2: align the ECG, echo, labs and note encoders on paired studies, without labels.

    Objectives (align.objectives): clip, clip_loo, temporal (ECG R-peak / T end vs echo
    end-diastole / end-systole), multimae (joint masked modelling with modality dropout). Trains
    on the training split (its losses watched on a hashed share of it, or on a stream's val split);
    writes OUT/aligned.pt. An interrupted run continues from its checkpoint, mid-epoch.
    """
    from .runs import finish_run
    from .stages.stage2 import encoder_config, run_align

    _one_source(cohort, stream)
    cfg = _stage("align", config, set_, out, overwrite)
    ecg = encoder_config(ecg_encoder, cfg.align.ecg_model, "align.ecg_model")
    video = encoder_config(video_encoder, cfg.align.video_model, "align.video_model")
    data = _cohort_or_stream(cfg, cohort, stream, {"ecg": ecg[0], "echo": video[0]}, endpoint_url)
    summary = run_align(cfg, data, out, ecg=ecg, video=video)
    finish_run(out, "align", steps=summary["steps"])
    console.print(f"[green]alignment finished after {summary['steps']} steps:[/] {out / 'aligned.pt'}")


@app.command(short_help="Stage 3a: train the multimodal teacher on labelled studies.")
def finetune(
    cohort: OptionalCohortOpt = None,
    stream: StreamOpt = None,
    aligned: Annotated[Optional[Path], typer.Option(
        help="The stage-2 model (aligned.pt). Without it the teacher starts from the stage-1 encoders.")] = None,
    ecg_encoder: Annotated[Optional[Path], typer.Option(help="Without --aligned: a stage-1 ECG encoder.pt.")] = None,
    video_encoder: Annotated[Optional[Path], typer.Option(help="Without --aligned: a stage-1 video encoder.pt.")] = None,
    out: RunOutOpt = Path("runs/teacher"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    endpoint_url: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Stage 3a: the multimodal teacher (triage, diagnoses, LVEF) on the labelled training studies.

    finetune.labelled sets the share of training studies with labels, finetune.mode probe or
    finetune, finetune.modalities what the teacher reads. Writes OUT/teacher.pt and
    OUT/teacher_outputs.npz (its outputs on every study, what distillation reads). With --stream the
    studies come from a stream written with the same finetune.labelled.
    """
    from .runs import finish_run
    from .stages.common import fusion_of
    from .stages.stage2 import encoder_config, unaligned_fusion
    from .stages.stage3 import run_finetune

    _one_source(cohort, stream)
    cfg = _stage("finetune", config, set_, out, overwrite)
    if aligned is not None:
        data = _cohort_or_stream(cfg, cohort, stream, fusion_of(aligned), endpoint_url)
        summary = run_finetune(cfg, data, out, aligned=aligned)
    else:
        ecg = encoder_config(ecg_encoder, cfg.align.ecg_model, "align.ecg_model")
        video = encoder_config(video_encoder, cfg.align.video_model, "align.video_model")
        data = _cohort_or_stream(cfg, cohort, stream, {"ecg": ecg[0], "echo": video[0]}, endpoint_url)
        summary = run_finetune(cfg, data, out, base=unaligned_fusion(cfg, data, ecg, video))
    finish_run(out, "finetune", steps=summary["steps"], labelled=summary["n_labelled"], kept=summary["kept"])
    if summary["kept"] == "finetune":
        how = "fine-tuned"
    elif "val_loss_probe" in summary:  # finetune.keep_probe chose the probe start on validation
        how = "its linear-probe start kept: lower validation loss than fine-tuned"
    else:
        how = "a linear probe, finetune.mode=probe"
    console.print(f"[green]teacher trained on {summary['n_labelled']} labelled studies ({how}):[/] "
                  f"{out / 'teacher.pt'}")


@app.command(short_help="Stage 3b: distil the teacher into a handheld-ECG student.")
def distill(
    teacher: Annotated[Path, typer.Option(help="The teacher's run folder (teacher.pt, teacher_outputs.npz).")],
    cohort: OptionalCohortOpt = None,
    stream: StreamOpt = None,
    leads: Annotated[int, typer.Option(help="Handheld leads the student reads: 1 (I), 2 (I, II) or 6 (limb).")] = 1,
    out: RunOutOpt = Path("runs/student"),
    no_teacher: Annotated[bool, typer.Option("--no-teacher", help="Train the same student on labels alone.")] = False,
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    endpoint_url: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Stage 3b: distil the teacher into a 1-6 lead handheld-ECG student; writes OUT/student.pt.

    The student learns the labels where known and the teacher's soft targets, embedding and LVEF on
    every training study (distill.* weights); --no-teacher trains it on the labelled studies alone.
    With --stream (the teacher's cohort written by `cardiodistill stream`) it reads the handheld ECGs
    from the stream and the teacher's outputs and targets from its teacher_outputs.npz.
    """
    from .runs import finish_run
    from .stages.common import fusion_of
    from .stages.stage3 import run_distill

    _one_source(cohort, stream)
    cfg = _stage("distill", config, set_, out, overwrite)
    data = _cohort_or_stream(cfg, cohort, stream, fusion_of(teacher / "teacher.pt"), endpoint_url)
    summary = run_distill(cfg, data, teacher, out, n_leads=leads, distil=not no_teacher)
    finish_run(out, "distill", steps=summary["steps"], leads=leads)
    console.print(f"[green]{leads}-lead student trained on {summary['n_train']} studies:[/] {out / 'student.pt'}")


@app.command(short_help="Write the clinician-readable HTML report of an evaluation.")
def report(
    evaluation: Annotated[Path, typer.Argument(help="An evaluation folder (metrics.json, figures/).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML file (default: EVALUATION/report.html).")] = None,
    show_ids: ShowIdsOpt = False,
) -> None:
    """Write the clinician-readable HTML report of an evaluation (plots embedded, one file)."""
    import json

    from .errors import DataError
    from .evaluate.pipeline_report import write_report

    metrics = evaluation / "metrics.json"
    if not metrics.is_file():
        raise DataError("no metrics.json: run `cardiodistill evaluate pipeline` first", evaluation)
    path = write_report(json.loads(metrics.read_text()), evaluation / "figures", out or evaluation / "report.html",
                        show_ids=show_ids)
    console.print(f"[green]report written:[/] {path}")


evaluate_app = typer.Typer(help="Evaluate a trained model on labelled data.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(evaluate_app, name="evaluate")


def _finish_evaluation(out: Path, kind: str, results: dict, table: str) -> None:
    """Write OUT/metrics.json and OUT/results.md, mark the run finished, print the table."""
    from .io.atomic import write_json_atomic, write_text_atomic
    from .runs import finish_run

    write_json_atomic(out / "metrics.json", results)
    write_text_atomic(out / "results.md", table)
    finish_run(out, kind, cells=len(results["cells"]))
    print(table)
    console.print(f"[green]evaluation finished:[/] {out}")


@evaluate_app.command("ecg", short_help="Probe and fine-tune an ECG encoder on labelled PTB-XL.")
def evaluate_ecg_cmd(
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="A pretrained encoder: encoder.pt, mae.pt or a training checkpoint.")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="A labelled PTB-XL folder (PhysioNet layout, or signals.npy + meta.csv).")] = None,
    out: RunOutOpt = Path("runs/evaluate-ecg"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    compare: Annotated[Optional[Path], typer.Option(
        "--compare", help="Another evaluate-ecg run folder: also print this run's cells minus its cells, paired "
                          "over the same records (two encoders, recipes or rates).")] = None,
) -> None:
    """Linear probe, fine-tuning, the same encoder from scratch and a supervised CNN, per lead set
    (12, limb6, I+II, I) and label fraction: macro AUROC with bootstrap 95 % CIs, plus the masked
    autoencoder's reconstruction quality (MSE, NCC, figure) on the evaluation records. With
    --set evaluate.ecg.repeats=N every cell runs with N seeds (label subset and initialisation) and
    reports their mean, so a comparison at a few hundred labels is not one draw.

    Writes OUT/results.md, OUT/metrics.json and, for a masked autoencoder, OUT/reconstruction.json
    and OUT/reconstruction.png. Finished cells are kept, so an interrupted run continues. With --compare
    another run's folder, each cell both runs have is also given as this run's minus that one's.
    """
    from . import stages  # noqa: F401  (registers the simulator: evaluate.ecg.data may be kind synth)
    from .evaluate.ecg_downstream import evaluate_ecg_encoder, results_table
    from .runs import prepare_run_folder
    from .train.engine import set_threads

    overrides = list(set_ or []) + ([f"evaluate.ecg.data={data}"] if data else [])
    cfg = load_config(config, overrides)
    prepare_run_folder(out, cfg, overwrite=overwrite, kind="evaluate-ecg")
    set_threads(cfg.trainer.threads)
    with console.status("evaluating") as status:
        results = evaluate_ecg_encoder(checkpoint, cfg.evaluate.ecg, cfg.trainer, out,
                                       progress=lambda text: status.update(text), compare=compare)
    _finish_evaluation(out, "evaluate-ecg", results, results_table(results))


@evaluate_app.command("video", short_help="Probe a video encoder on a labelled simulated echo cohort.")
def evaluate_video_cmd(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="A pretrained video encoder: encoder.pt, mae.pt or a training checkpoint.")],
    out: RunOutOpt = Path("runs/evaluate-video"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Frozen-encoder probes on a labelled simulated echo cohort: LVEF (MAE, Bland-Altman limits)
    and conditions (AUROC), at several label fractions, against the same architecture untrained.

    Writes OUT/results.md, OUT/metrics.json, OUT/agreement.png (LVEF) and OUT/embedding_map.png
    (test clips in 2-D, coloured by condition). Finished cells are kept, so a rerun continues.
    """
    from . import stages  # noqa: F401  (registers the simulator: the default evaluation echos are kind synth)
    from .evaluate.video_downstream import evaluate_video_encoder, video_results_table
    from .runs import prepare_run_folder

    cfg = load_config(config, list(set_ or []))
    prepare_run_folder(out, cfg, overwrite=overwrite, kind="evaluate-video")
    with console.status("evaluating") as status:
        results = evaluate_video_encoder(checkpoint, cfg.evaluate.video, cfg.trainer, out,
                                         progress=lambda text: status.update(text))
    _finish_evaluation(out, "evaluate-video", results, video_results_table(results))


@evaluate_app.command("pipeline", short_help="Evaluate the teacher and students on held-out studies.")
def evaluate_pipeline_cmd(
    cohort: CohortOpt,
    teacher: Annotated[Path, typer.Option(help="The teacher (teacher.pt).")],
    student: Annotated[Optional[list[Path]], typer.Option(help="A student.pt (repeatable).")] = None,
    aligned: Annotated[Optional[Path], typer.Option(help="The stage-2 model, for retrieval and probes.")] = None,
    out: RunOutOpt = Path("runs/evaluate-pipeline"),
    config: ConfigOpt = "quick",
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    show_ids: ShowIdsOpt = False,
) -> None:
    """Teacher and students on the held-out test studies: AUROC, AUPRC, balanced accuracy, F1,
    sensitivity and specificity with bootstrap 95 % CIs, LVEF agreement, calibration, subgroups,
    retrieval, phase accuracy, attention rollout and source variance. Writes OUT/metrics.json,
    OUT/figures and OUT/report.html."""
    from .evaluate.pipeline_report import write_report
    from .evaluate.triage import evaluate_pipeline
    from .runs import finish_run
    from .stages.common import fusion_of

    cfg = _stage("evaluate-pipeline", config, set_, out, overwrite)
    data = _open(cfg, cohort, fusion_of(teacher))
    students = {f"student {i + 1} ({p.parent.name})": p for i, p in enumerate(student or [])}
    with console.status("evaluating on the test studies"):
        results = evaluate_pipeline(data, out, teacher=teacher, students=students, aligned=aligned,
                                    label_fractions=cfg.finetune.label_fractions, n_boot=cfg.pipeline.bootstrap,
                                    rule=cfg.pipeline.threshold, failures=cfg.pipeline.failures, seed=cfg.pipeline.seed,
                                    show_ids=show_ids)
    write_report(results, out / "figures", out / "report.html", config=cfg, show_ids=show_ids)
    finish_run(out, "evaluate-pipeline", models=len(results["models"]))
    print(_headline(results))
    console.print(f"[green]evaluation finished:[/] {out / 'report.html'}")


config_app = typer.Typer(help="Inspect configs and presets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(config_app, name="config")


@config_app.command("show", short_help="Print the resolved config (preset + overrides) as YAML.")
def config_show(preset: PresetOpt = "quick", set_: SetOpt = None) -> None:
    """Print the resolved config (preset + overrides) as YAML."""
    print(config_to_yaml(load_config(preset, list(set_ or []))), end="")


@config_app.command("presets", short_help="List the built-in presets.")
def config_presets() -> None:
    """List the built-in presets."""
    print("\n".join(preset_names()))


app.command("predict", short_help="Score ECG files with an exported model (no PyTorch needed).")(predict_cmd)
app.command("serve", short_help="Serve a model to a browser and over HTTP (point of care).")(serve_cmd)
app.command("export", short_help="Export a student to ONNX behind an accuracy gate.")(export_cmd)


def _simulated_windows(n, leads, fs, seconds, rng):
    """Simulated handheld windows for ``cardiodistill bench`` (deploy never imports the simulator)."""
    from .synth.windows import simulated_windows

    return simulated_windows(n, leads, fs, seconds, rng)


app.command("bench", short_help="Time a student on PyTorch and ONNX; sizes and memory.")(
    bench_command(_simulated_windows))


@app.command()
def version() -> None:
    """Print the cardiodistill version."""
    print(__version__)


# What the `train` extra adds to an `edge` install (pyproject.toml).
_TRAIN_ONLY = frozenset({"torch", "lightning", "pandas", "sklearn", "matplotlib", "av", "nibabel", "neurokit2", "onnx"})
# The libraries of the video readers (io/video.py), part of the `train` extra.
_VIDEO_ONLY = frozenset({"av", "nibabel"})


def _launch_rank() -> int:
    """This process's rank as Lightning reads it from the launcher (torchrun, its own DDP launcher, SLURM,
    LSF: the first of these variables that is set); 0 otherwise. Read here without importing Lightning,
    which an ``edge`` install does not have."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value is not None:
            return int(value) if value.isdigit() else 0
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point: typed user errors become one line on stderr and exit status 2.

    Usage errors (an unknown command or option) are Typer's own: usage line, message, status 2.
    Under a multi-process launcher (torchrun, SLURM) only the first process shows progress and
    messages; any process shows its errors.
    """
    console.quiet = _launch_rank() != 0
    try:
        app(args=argv)
    except CardiodistillError as err:
        console.quiet = False
        console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as err:  # an `edge` install running a training command
        if err.name not in _TRAIN_ONLY:
            raise
        console.quiet = False
        console.print(f"[red]error:[/] this command needs {err.name}, part of the training install: "
                      + escape("pip install 'cardiodistill[train]'"), highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
