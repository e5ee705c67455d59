"""Echo and cardiac-MR cine loops from any common file: DICOM, AVI, MP4/MOV, MKV/WebM and NIfTI.

:func:`read_video` tells the format from the file's first bytes, not its name (exports arrive as
``.bin``, ``.dat`` or with no suffix at all):

============== ======================================================================
format         signature
============== ======================================================================
dicom          ``DICM`` at byte 128, read by :func:`~cardiodistill.io.dicom.read_video_dicom`
avi            ``RIFF....AVI `` (RIFF chunk of form type ``AVI``)
mp4            an ISO base media / QuickTime box at byte 4 (``ftyp``, or ``moov``/``mdat``/``wide``)
mkv            the EBML magic ``1A 45 DF A3`` (Matroska and WebM)
nifti          NIfTI-1 (``n+1``/``ni1`` at byte 344 of a 348-byte header) or NIfTI-2 (``n+2``/``ni2``
               at byte 4 of a 540-byte header), plain or gzip-compressed
============== ======================================================================

**Video containers** are decoded by PyAV (FFmpeg): every frame of the first video stream, as luma
(``gray``), into one preallocated ``uint8 [T, H, W]`` array when the container knows its frame count.
The frame rate is the stream's average rate, else FFmpeg's guess, else the median frame interval.

**NIfTI** cines are ``[X, Y, T]`` or ``[X, Y, Z, T]`` (the middle slice of ``Z`` is read). Frames are
shown the way viewers show NIfTI slices: columns run along ``x`` (voxel axis i) and rows along ``y``
(axis j) from the highest ``j`` at the top, so anterior/superior is up in the usual RAS-like storage.
This also undoes the row flip of DICOM-to-NIfTI converters (dcm2niix stores DICOM rows bottom-up), so
a converted DICOM cine reads as the scanner displayed it. The time step is the last ``pixdim`` in the
header's time unit (s, ms or µs). ``uint8`` data is kept as is; any other type is windowed to the
0.5-99.5th percentile of the clip and mapped to 0-255 with one scale for all frames.

Every failure (missing, empty, truncated or corrupt file, unknown format, no frame timing) is a
one-line :class:`~cardiodistill.errors.DataError` naming the file. :func:`write_video` and
:func:`write_nifti_cine` write clips back (atomically) for viewing and for round-trip tests.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from collections.abc import Iterator
from fractions import Fraction
from os import PathLike
from pathlib import Path

import av
import nibabel as nib
import numpy as np

from ..errors import ConfigError, DataError, SamplingRateError, one_line
from ..records import VideoClip
from .atomic import atomic_path, write_bytes_atomic
from .dicom import read_video_dicom
from .limits import (
    MAX_FRAME_SIDE,
    MAX_FRAMES,
    MAX_VIDEO_VOXELS,
    check_file_size,
    check_fps,
    check_pixel_spacing,
    check_video_shape,
)

__all__ = ["VIDEO_SUFFIXES", "is_video_file", "read_video", "write_nifti_cine", "write_video"]

VIDEO_SUFFIXES = (".dcm", ".avi", ".mp4", ".mov", ".mkv", ".webm", ".nii", ".nii.gz")

_SNIFF_BYTES = 512
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide")  # ftyp first in ISO files; older QuickTime starts elsewhere
_EBML = b"\x1a\x45\xdf\xa3"
_GZIP = b"\x1f\x8b"
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")  # single file, header + image pair
_NIFTI2_MAGIC = (b"n+2\x00", b"ni2\x00")
_NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".hdr.gz")  # names nibabel.load dispatches on itself
# DICOM storage classes that never hold a cine (waveforms such as ECGs, structured reports such as echo
# measurements, encapsulated PDF/CDA, presentation states): is_video_file says False for them.
_DICOM_NON_IMAGE = tuple(f"1.2.840.10008.5.1.4.1.1.{kind}.".encode() for kind in (9, 88, 104, 11))
_DICOM_SOP_CLASS = b"\x02\x00\x02\x00UI"  # (0002,0002) MediaStorageSOPClassUID, explicit VR little endian
_TIME_UNITS_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_SPACE_UNITS_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}
_PERCENTILES = (0.5, 99.5)
_MIN_FRAME_BYTES = 4  # the least a container spends per frame (an MP4 sample-size entry)
_MAX_NIFTI_BYTES = MAX_VIDEO_VOXELS + 540  # a uint8 clip at the limit plus a NIfTI-2 header
_WRITE_FORMATS = {".mp4": "mp4", ".avi": "avi"}
_MAX_RATE_DENOMINATOR = 1001  # 30000/1001 (NTSC) is exact; MPEG-4 part 2 allows at most 65535
_QSCALE = {"flags": "+qscale", "global_quality": str(2 * 118)}  # fixed quantiser 2 (118 = FF_QP2LAMBDA)


# ------------------------------------------------------------------------------------- sniffing


def _nifti_version(header: bytes) -> int | None:
    """1 or 2 for a NIfTI-1 / NIfTI-2 header (either byte order), else ``None``."""
    if len(header) >= 348 and header[344:348] in _NIFTI1_MAGIC and 348 in _int32s(header):
        return 1
    if len(header) >= 8 and header[4:8] in _NIFTI2_MAGIC and 540 in _int32s(header):
        return 2
    return None


def _int32s(header: bytes) -> tuple[int, int]:
    """``sizeof_hdr`` (the first int32) read little- and big-endian."""
    return int.from_bytes(header[:4], "little"), int.from_bytes(header[:4], "big")


def _gunzip_head(head: bytes) -> bytes:
    """As much of a gzip stream's content as ``head`` (its first bytes) decodes to; ``b""`` if corrupt."""
    try:
        return zlib.decompressobj(wbits=31).decompress(head)
    except zlib.error:
        return b""


def _sniff(head: bytes, name: str) -> str | None:
    """The format of a file from its first bytes (``name`` only breaks a tie for short gzip reads)."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[4:8] in _MP4_BOXES:
        return "mp4"
    if head[:4] == _EBML:
        return "mkv"
    if head[:2] == _GZIP:
        content = _gunzip_head(head)
        if len(content) < 348 and content and name.lower().endswith(".nii.gz"):
            return "nifti"  # a long gzip file name field can push the header past the bytes read
        head = content
    return "nifti" if _nifti_version(head) else None


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_SNIFF_BYTES)


def _dicom_sop_class(head: bytes) -> bytes:
    """MediaStorageSOPClassUID from the file meta group (always explicit VR little endian), or ``b""``."""
    at = head.find(_DICOM_SOP_CLASS, 132)
    if at < 0:
        return b""
    length = int.from_bytes(head[at + 6 : at + 8], "little")
    return head[at + 8 : at + 8 + length].rstrip(b"\x00 ")


def is_video_file(path: str | PathLike[str]) -> bool:
    """True when the file's first 512 bytes are a format :func:`read_video` reads.

    Never raises: unreadable paths and folders give False. DICOM objects that cannot hold a cine
    (ECG waveforms, structured reports, encapsulated documents) give False too. True does not
    promise the file decodes; :func:`read_video` says why when it does not.
    """
    try:
        head = _read_head(Path(path))
    except OSError:
        return False
    kind = _sniff(head, Path(path).name)
    if kind == "dicom":
        return not _dicom_sop_class(head).startswith(_DICOM_NON_IMAGE)
    return kind is not None


# -------------------------------------------------------------------------------------- reading


def read_video(
    path: str | PathLike[str],
    *,
    fps: float | None = None,
    view: str | None = None,
    modality: str | None = None,
) -> VideoClip:
    """Read a cine loop as a grayscale ``uint8 [T, H, W]`` :class:`VideoClip`, whatever its format.

    ``fps`` (frames/s) overrides the file's timing and is required when the file has none.
    ``view`` defaults to the DICOM SeriesDescription or ``"unknown"``; ``modality`` (``"echo"`` or
    ``"cmr"``) to the DICOM Modality, ``"echo"`` for video containers and ``"cmr"`` for NIfTI.
    ``meta`` has ``format`` and ``pixel_spacing_mm`` ((row, column) mm or ``None``) for video and
    NIfTI files (plus ``codec``, or ``slice``/``n_slices``/``intensity_window``), and what
    :func:`read_video_dicom` returns for DICOM.
    """
    path = Path(path)
    if modality is not None and modality not in ("echo", "cmr"):
        raise ConfigError(f"modality must be 'echo' or 'cmr', got {modality!r}")
    if fps is not None:
        check_fps(fps, path, "fps")
    if path.is_dir():
        raise DataError("is a folder, not a video file", path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        head = _read_head(path)
    except OSError as err:
        raise DataError(f"cannot read file: {one_line(err)}", path) from None
    if not head:
        raise DataError("empty file", path)

    kind = _sniff(head, path.name)
    if kind == "dicom":
        clip = read_video_dicom(path, fps=fps, view=view)
        return clip if modality is None else dataclasses.replace(clip, modality=modality)
    if kind == "nifti":
        return _read_nifti(path, fps=fps, view=view or "unknown", modality=modality or "cmr")
    if kind is not None:
        return _read_container(path, kind, fps=fps, view=view or "unknown", modality=modality or "echo")
    raise DataError("unsupported video format (not DICOM, AVI, MP4/MOV, MKV/WebM or NIfTI by its content)", path)


def _stack(images: Iterator[np.ndarray], n_hint: int, file_size: int, where: Path) -> np.ndarray:
    """Stack ``[H, W]`` frames into ``[T, H, W]``, refusing a clip beyond :mod:`.limits` as soon as it
    gets there. ``n_hint`` (the container's frame count, which a corrupt header can set to anything)
    only sizes the first preallocation, and no further than the file could hold: every stored frame
    takes at least :data:`_MIN_FRAME_BYTES` bytes of the file."""
    first = next(images, None)
    if first is None:
        return np.empty((0, 0, 0), dtype=np.uint8)
    check_video_shape(1, *first.shape, where)
    limit = min(MAX_FRAMES, MAX_VIDEO_VOXELS // first.size)
    out = np.empty((max(1, min(n_hint, limit, file_size // _MIN_FRAME_BYTES)), *first.shape), dtype=np.uint8)
    out[0] = first
    count, extra = 1, []
    for image in images:
        if count >= limit:
            check_video_shape(count + 1, *first.shape, where)  # raises: one frame too many
        if count < len(out):
            out[count] = image
        else:
            extra.append(image)
        count += 1
    return np.concatenate([out, np.stack(extra)]) if extra else out[:count]


def _container_fps(stream: av.video.stream.VideoStream, pts: list[int]) -> float | None:
    """Frames/s: the average rate, else FFmpeg's guessed rate, else the median frame interval."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    steps = np.diff(np.asarray(pts, dtype=np.float64))
    steps = steps[steps > 0]
    if steps.size and stream.time_base:
        return 1.0 / float(np.median(steps) * stream.time_base)
    return None


def _read_container(path: Path, kind: str, *, fps: float | None, view: str, modality: str) -> VideoClip:
    """Decode the first video stream of an AVI / MP4 / MKV file with PyAV."""
    pts: list[int] = []

    def luma(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[np.ndarray]:
        for frame in container.decode(stream):
            if frame.pts is not None:
                pts.append(frame.pts)
            yield frame.to_ndarray(format="gray")

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise DataError(f"no video stream in this {kind.upper()} file", path)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if stream.codec_context is None:  # a codec FFmpeg does not know (or a corrupt codec tag)
                raise DataError(f"no decoder for the video stream's codec in this {kind.upper()} file", path)
            width, height = stream.codec_context.width, stream.codec_context.height
            if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:  # 0 = not known before decoding
                check_video_shape(1, height, width, path)
            frames = _stack(luma(container, stream), stream.frames, path.stat().st_size, path)
            codec = stream.codec_context.name
            rate = fps if fps is not None else _container_fps(stream, pts)
    except DataError:
        raise
    except av.FFmpegError as err:
        problem = getattr(err, "strerror", None) or one_line(err)
        raise DataError(f"cannot decode {kind.upper()} video, truncated or corrupt? ({problem})", path) from None
    except ValueError as err:  # frames changing size mid-stream cannot be stacked
        raise DataError(f"cannot decode {kind.upper()} video: {one_line(err)}", path) from None
    if not len(frames):
        raise DataError(f"no decodable frames in this {kind.upper()} file", path)
    if rate is None:
        raise SamplingRateError("no frame rate in the video stream; give fps (--fs)", path)
    rate = check_fps(rate, path)
    meta = {"format": kind, "codec": codec, "pixel_spacing_mm": None}
    return VideoClip(frames=frames, fps=rate, view=view, modality=modality, source=str(path), meta=meta)


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel's loader for the names it knows (memory-mapped, header/image pairs); single-file images
    under any other name are read from their (decompressed) bytes."""
    if path.name.lower().endswith(_NIBABEL_SUFFIXES):
        return nib.load(path)
    check_file_size(path, _MAX_NIFTI_BYTES, "NIfTI file")
    raw = path.read_bytes()
    if raw[:2] == _GZIP:  # decompressed no further than a clip may be (a small file can inflate to anything)
        raw = zlib.decompressobj(wbits=31).decompress(raw, _MAX_NIFTI_BYTES + 1)
        if len(raw) > _MAX_NIFTI_BYTES:
            raise DataError(f"NIfTI image inflates to over {_MAX_NIFTI_BYTES:,} bytes", path)
    if raw[344:348] == b"ni1\x00" or raw[4:8] == b"ni2\x00":
        raise DataError("NIfTI header of a .hdr/.img pair; name it .hdr next to its .img", path)
    klass = nib.Nifti2Image if _nifti_version(raw[:540]) == 2 else nib.Nifti1Image
    return klass.from_bytes(raw)


def _window_to_uint8(data: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Map a clip of any numeric type to uint8 with one scale: ``uint8`` unchanged, anything else
    clipped to its 0.5-99.5th percentile window (non-finite values become the window's low end)."""
    if data.dtype == np.uint8:
        return data, None
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DataError(f"voxel type {data.dtype} is not a grayscale number type", path)
    finite = np.isfinite(data)
    values = data if finite.all() else data[finite]
    if not values.size:
        raise DataError("no finite voxel values", path)
    lo, hi = (float(v) for v in np.percentile(values, _PERCENTILES))
    if hi <= lo:  # (nearly) constant or few distinct values: fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    scaled = (np.where(finite, data, lo).astype(np.float32) - lo) * scale
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8), (lo, hi)


def _read_nifti(path: Path, *, fps: float | None, view: str, modality: str) -> VideoClip:
    """Read a NIfTI cine ``[X, Y, T]`` or ``[X, Y, Z, T]`` (middle Z slice) as ``[T, rows=y, cols=x]``."""
    try:
        img = _load_nifti(path)
        shape = img.shape
        if len(shape) not in (3, 4):
            raise DataError(f"a NIfTI cine is [X, Y, T] or [X, Y, Z, T]; this image has shape {shape}", path)
        n_slices = shape[2] if len(shape) == 4 else 1
        if not 1 <= n_slices <= MAX_FRAME_SIDE:
            raise DataError(f"{n_slices} slices; a NIfTI cine has 1-{MAX_FRAME_SIDE}", path)
        check_video_shape(shape[-1], shape[1], shape[0], path)  # before the voxels are read
        z = n_slices // 2
        data = np.asarray(img.dataobj[:, :, z, :] if len(shape) == 4 else img.dataobj[:, :, :])
        header = img.header
        zooms = [float(v) for v in header.get_zooms()]
        space_unit, time_unit = header.get_xyzt_units()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - nibabel/gzip raise many types for a truncated or broken file
        raise DataError(f"cannot read NIfTI image, truncated or corrupt? ({one_line(err)})", path) from None

    if fps is None:
        step_s = zooms[len(shape) - 1] * _TIME_UNITS_S.get(time_unit, 0.0)
        if not (np.isfinite(step_s) and step_s > 0):
            raise SamplingRateError(
                f"no time step in the NIfTI header (pixdim {zooms[len(shape) - 1]:g}, time unit {time_unit!r}); "
                "give fps (--fs)",
                path,
            )
        fps = 1.0 / step_s
    fps = check_fps(fps, path)
    frames, window = _window_to_uint8(data, path)
    frames = np.ascontiguousarray(frames.transpose(2, 1, 0)[:, ::-1, :])  # [T, y from the top, x]
    mm = _SPACE_UNITS_MM.get(space_unit)
    spacing = check_pixel_spacing((zooms[1] * mm, zooms[0] * mm), path) if mm else None
    meta = {
        "format": "nifti",
        "slice": z,
        "n_slices": n_slices,
        "pixel_spacing_mm": spacing,
        "intensity_window": window,
    }
    return VideoClip(frames=frames, fps=fps, view=view, modality=modality, source=str(path), meta=meta)


# -------------------------------------------------------------------------------------- writing


def _encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        raise ConfigError(f"video codec {name!r} has no encoder in this PyAV/FFmpeg build") from None
    if codec.type != "video":
        raise ConfigError(f"codec {name!r} is a {codec.type} codec, not a video codec")
    return codec


def _default_codec(container_format: str) -> str:
    """MP4: H.264 (libx264) where the FFmpeg build has it, else MPEG-4 part 2; AVI: lossless FFV1."""
    if container_format == "avi":
        return "ffv1"
    try:
        return _encoder("libx264").name
    except ConfigError:
        return "mpeg4"


def _pixel_format(codec: av.Codec, height: int, width: int) -> str:
    """Lossless codecs store the luma plane itself (``gray``, exact). Lossy codecs get 8-bit 4:2:0
    YUV, the format every player decodes, or 4:4:4 where an odd frame size rules out 4:2:0."""
    names = [fmt.name for fmt in codec.video_formats or ()]
    if codec.lossless and not codec.lossy and (not names or "gray" in names):
        return "gray"
    wanted = ("yuv420p", "yuvj420p") if height % 2 == 0 and width % 2 == 0 else ("yuv444p", "yuvj444p")
    return next((name for name in names if name in wanted), names[0] if names else "gray")


def write_video(clip: VideoClip, path: str | PathLike[str], *, codec: str | None = None) -> Path:
    """Write ``clip`` as an ``.mp4`` or ``.avi`` file (chosen by the suffix) atomically; return the path.

    ``codec`` is an FFmpeg encoder name. By default MP4 gets H.264 (``libx264``, CRF 18, visually
    lossless) or, without it, MPEG-4 part 2; AVI gets FFV1, which is lossless: :func:`read_video`
    gives the frames back exactly. ``mjpeg`` (AVI) and ``rawvideo`` are other common choices. The
    frame rate is stored as the fraction nearest ``clip.fps`` with a denominator of at most 1001.
    """
    path = Path(path)
    container_format = _WRITE_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise DataError(f"write_video writes .mp4 or .avi files, not {path.suffix or 'no suffix'!r}", path)
    encoder = _encoder(codec or _default_codec(container_format))
    _, height, width = clip.frames.shape
    rate = Fraction(clip.fps).limit_denominator(_MAX_RATE_DENOMINATOR)
    if encoder.lossless and not encoder.lossy:
        options = {}
    else:
        options = {"crf": "18"} if encoder.name == "libx264" else dict(_QSCALE)
    try:
        with atomic_path(path) as tmp, av.open(str(tmp), "w", format=container_format) as out:
            stream = out.add_stream(encoder.name, rate=rate, options=options)
            stream.width, stream.height = width, height
            stream.pix_fmt = _pixel_format(encoder, height, width)
            for image in clip.frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")))
            out.mux(stream.encode())  # flush delayed frames
    except (av.FFmpegError, ValueError) as err:  # ValueError: a codec the container cannot hold
        problem = getattr(err, "strerror", None) or one_line(err)
        raise DataError(f"cannot write {container_format.upper()} with codec {encoder.name}: {problem}", path) from None
    return path


def write_nifti_cine(clip: VideoClip, path: str | PathLike[str], *, dtype: str = "uint8") -> Path:
    """Write ``clip`` as a NIfTI-1 cine ``[X, Y, 1, T]`` (``.nii`` or ``.nii.gz``) atomically; return the path.

    The inverse of :func:`read_video`'s NIfTI layout: frame columns become ``x``, rows become ``y``
    from the bottom. ``dtype`` is ``"uint8"`` or ``"float32"`` (the same 0-255 values). The time step
    is stored in seconds; ``clip.meta["pixel_spacing_mm"]`` (row, column), when present, gives the
    in-plane voxel size in mm, otherwise the spatial unit is left unknown.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise DataError("write_nifti_cine writes .nii or .nii.gz files", path)
    if dtype not in ("uint8", "float32"):
        raise ConfigError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
    data = clip.frames[:, ::-1, :].transpose(2, 1, 0)[:, :, None, :].astype(dtype)  # [x, y, 1, t]
    spacing = clip.meta.get("pixel_spacing_mm")
    row_mm, col_mm = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64), (2,))
    img = nib.Nifti1Image(data, np.diag([col_mm, row_mm, 1.0, 1.0]))
    img.header.set_xyzt_units(xyz="mm" if spacing is not None else "unknown", t="sec")
    img.header.set_zooms((col_mm, row_mm, 1.0, 1.0 / clip.fps))
    raw = img.to_bytes()  # serialised here: nibabel would not recognise the temporary file's name
    if path.suffix.lower() == ".gz":
        raw = gzip.compress(raw, mtime=0)  # no time stamp: the same clip gives the same bytes
    return write_bytes_atomic(path, raw)
