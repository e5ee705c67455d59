"""Smaller ONNX graphs of an exported student: int8 static quantisation and float16 weights.

:func:`quantize_int8` runs onnxruntime's static quantisation in QDQ format: int8 weights (one scale per
output channel by default) and int8 activations whose ranges are calibrated (min/max) on ECG windows
the caller passes, e.g. validation recordings (or simulated ones, drawn by the caller with
the simulator's ``simulated_windows``: deploy never imports the simulator). The graph is first
pre-processed (:func:`onnxruntime.quantization.shape_inference.quant_pre_process`: shape inference and
graph optimisation), which folds the conv biases into initializers.

Measured on the 6-lead ``student_cnn`` (onnxruntime 1.31, one x86 core with AVX2 but no VNNI, batch 1):

* activations are **int8** ("S8S8", onnxruntime's recommendation for QDQ). uint8 activations ran 2-3x
  faster here but moved the probabilities of a 1-lead ``student_cnn_tiny`` trained on a toy task by
  0.24 on average (up to 0.87): without VNNI the u8 x s8 products saturate 16-bit sums. On this CPU class the int8 graph (1.2 ms) is slower
  than float32 (0.9 ms) and only smaller; cores with int8 dot products (VNNI, ARM dotprod) are where
  it runs faster. Pre-processing made it ~15 % faster.
* the **output head stays float**: the last linear layers, the sigmoid and the concatenation that
  forms the output. Quantised, the probabilities and the LVEF share one 8-bit scale: 32 simulated
  recordings got 19 distinct triage probabilities (32 with the head in float). The head is a few
  hundred weights; walking back from the outputs to the first linear layer, it also takes in the whole graph of a
  :class:`~cardiodistill.models.FeatureTrees` ensemble member (gathers and comparisons, no linear layer).
* **the rhythm features stay float32**: the graph's second input (a student's whole-recording rhythm and beat
  features) is not quantised, so no node reads it in int8. Its columns span different units (a share of beats,
  milliseconds, a log-ratio) and one int8 scale over all of them rounded the small ones to a few levels; a
  student's batch norm (float) brings them to one scale before its first linear layer, and
  :class:`~cardiodistill.models.FeatureTrees` compare them with thresholds of full precision.
* **names are short** (:func:`compact_names`): every intermediate tensor ``t<i>``, every node ``n<i>``; the
  exporter's module-path names, lengthened by the quantiser's suffixes, had been a quarter of the bundled file.
* **recurrent layers stay float32 in compute but float16 in the file**: static QDQ quantisation does not
  cover GRU / LSTM / RNN nodes, so their weight matrices would stay float32 (a 64-unit bidirectional GRU
  over 128 channels: 295 kB, most of an int8 student's file). They are stored as float16 with a ``Cast``
  to float32 that onnxruntime folds when it loads the graph.

:func:`convert_fp16` stores the weights as float16 and keeps float32 inputs and outputs. Both write
atomically and keep the file's ``metadata_props``, with the :class:`~cardiodistill.edge.spec.EdgeSpec`
re-tagged with the new precision.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..edge.spec import METADATA_KEY, EdgeSpec
from ..errors import ConfigError, DataError
from ..io.atomic import atomic_path

__all__ = ["compact_names", "convert_fp16", "quantize_int8", "require_onnx", "retag_precision"]

_INSTALL = "pip install 'cardiodistill[train]'"
_CALIBRATION_BATCH = 16  # windows per calibration run: the per-run overhead dominates at batch 1
_HEAD_STOP = ("Gemm", "MatMul")  # the head ends (walking back from the outputs) at the first linear layer


def require_onnx():
    """The ``onnx`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import onnx
    except ImportError as err:
        raise ConfigError(f"ONNX export and quantisation need the 'onnx' package: {_INSTALL}") from err
    return onnx


def retag_precision(proto, precision: str) -> None:
    """Set ``precision`` in the EdgeSpec of an ``onnx.ModelProto``'s metadata, in place (no-op without one).

    The other ``metadata_props`` are kept as they are.
    """
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        return
    spec = dataclasses.replace(EdgeSpec.from_dict(json.loads(props[METADATA_KEY])), precision=precision)
    props[METADATA_KEY] = spec.to_json()
    require_onnx().helper.set_model_props(proto, props)


def compact_names(proto) -> bool:
    """Rename the graph's intermediate tensors ``t0, t1, ...`` and its nodes ``n0, n1, ...``, in place; the
    inputs and outputs keep their names. Returns False (nothing renamed) for a graph with subgraphs, whose
    nodes may read the outer graph's names.

    The exporter names tensors after the module path (``model.members.1.backbone.stages.3.0.convs.5...``) and
    the quantiser adds ``_quantized`` / ``_DequantizeLinear_Output`` to each: in the bundled three-member
    CinC 2017 model the names took 247 of its 928 kB. The graph and its arithmetic are unchanged."""
    graph = proto.graph
    attribute = require_onnx().AttributeProto
    if any(a.type in (attribute.GRAPH, attribute.GRAPHS) for node in graph.node for a in node.attribute):
        return False
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    fresh = (f"t{i}" for i in itertools.count() if f"t{i}" not in keep)  # an input may be called t<i>
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:  # "" marks an omitted optional input
            return name
        if name not in short:
            short[name] = next(fresh)
        return short[name]

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = rename(sparse.values.name)
    for i, node in enumerate(graph.node):
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = f"n{i}"
    for info in graph.value_info:
        info.name = rename(info.name)
    for annotation in graph.quantization_annotation:
        annotation.tensor_name = rename(annotation.tensor_name)
    return True


def _input(proto, path: Path, n_inputs: int = 1) -> tuple[list[str], int | None]:
    """Names of the graph's ``n_inputs`` inputs (the ECG, then a student's rhythm features) and the ECG's lead
    count, None when that axis is dynamic."""
    if len(proto.graph.input) != n_inputs:
        raise DataError(f"expected a graph with {n_inputs} input{'s' if n_inputs > 1 else ''}, found "
                        f"{len(proto.graph.input)}", path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    leads = dims[1].dim_value if len(dims) == 3 and dims[1].HasField("dim_value") else None
    return [i.name for i in proto.graph.input], leads


def _output_head(proto) -> list[str]:
    """Names of the nodes between the graph outputs and the first linear layer before them (included)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    stack = [o.name for o in proto.graph.output]
    head: dict[str, None] = {}
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in head:
            continue
        head[node.name] = None
        if node.op_type not in _HEAD_STOP:
            stack.extend(node.input)
    return list(head)


def _float_nodes(proto, float_inputs: list[str]) -> list[str]:
    """The nodes that stay float: the output head (:func:`_output_head`) and every node that reads one of
    ``float_inputs`` (the rhythm features: module doc)."""
    readers = [node.name for node in proto.graph.node if set(node.input) & set(float_inputs)]
    return list(dict.fromkeys(_output_head(proto) + readers))


def _check_calibration(calibration: np.ndarray, leads: int | None, path: Path) -> np.ndarray:
    x = np.asarray(calibration)
    if x.ndim != 3 or len(x) == 0 or (leads is not None and x.shape[1] != leads):
        want = f"[N, {leads if leads is not None else 'L'}, T]"
        raise DataError(f"calibration windows must be a non-empty float array {want}, got shape {x.shape}", path)
    if not np.all(np.isfinite(x)):
        raise DataError("calibration windows contain NaN or infinite values", path)
    return x.astype(np.float32, copy=False)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantisation tools log advice to the root logger; keep it off the user's console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(
    src_onnx: str | os.PathLike[str],
    dst_onnx: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    rhythm: np.ndarray | None = None,
) -> Path:
    """Write an int8 (QDQ) version of the float graph ``src_onnx`` to ``dst_onnx``, atomically; returns it.

    ``calibration`` ``[N, L, T]`` float32: windows prepared as the model's inputs (per-lead z-scored);
    activation ranges are their min/max. ``rhythm [N, n]``: the windows' rhythm features, for a graph that
    takes them as its second input. ``per_channel``: one weight scale per output channel (else
    one per tensor). The EdgeSpec in the metadata is re-tagged ``precision="int8"``.
    """
    onnx = require_onnx()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src_onnx), Path(dst_onnx)
    if not src.is_file():
        raise DataError("no such ONNX file", src)
    proto = onnx.load(str(src))
    names, leads = _input(proto, src, 1 if rhythm is None else 2)
    x = _check_calibration(calibration, leads, src)
    arrays = [x]
    if rhythm is not None:
        r = np.asarray(rhythm, np.float32)
        if r.ndim != 2 or len(r) != len(x) or not np.all(np.isfinite(r)):
            raise DataError(f"calibration rhythm features must be finite [{len(x)}, n], got shape {r.shape}", src)
        arrays.append(r)
    n_batches = -(-len(x) // _CALIBRATION_BATCH)

    class _Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = zip(*(np.array_split(a, n_batches) for a in arrays))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else dict(zip(names, batch))

    with tempfile.TemporaryDirectory(prefix="cardiodistill-quant-") as tmp_dir, _quiet_root_logger():
        prepared = Path(tmp_dir) / "prepared.onnx"
        # symbolic shape inference cannot resolve the dynamic samples axis (and leaves temp files in the
        # working directory when it fails); onnx's own shape inference is enough here
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        with atomic_path(dst) as tmp:
            quantize_static(
                str(prepared), str(tmp), _Windows(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=_float_nodes(onnx.load(str(prepared)), names[1:]),
            )
            quantized = onnx.load(str(tmp))
            _recurrent_weights_fp16(quantized)
            compact_names(quantized)
            onnx.helper.set_model_props(quantized, {p.key: p.value for p in proto.metadata_props})
            retag_precision(quantized, "int8")
            onnx.save(quantized, str(tmp))
    return dst


_RECURRENT = {"GRU", "LSTM", "RNN"}


def _recurrent_weights_fp16(model) -> int:
    """Store the float32 weight matrices (``W``, ``R``) of the recurrent nodes of ``model`` as float16, each read
    through a ``Cast`` back to float32 (module doc); in place. Returns the initializers converted."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    casts, converted = [], 0
    for node in graph.node:
        if node.op_type not in _RECURRENT:
            continue
        for name in list(node.input)[1:3]:  # W and R; the bias stays float32
            tensor = initializers.get(name)
            if tensor is None or tensor.data_type != TensorProto.FLOAT or users.get(name) != 1:
                continue
            half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}_fp16")
            graph.initializer.remove(tensor)
            graph.initializer.append(half)
            casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT, name=f"{name}_to_fp32"))
            converted += 1
    for i, cast in enumerate(casts):  # before every node that reads them
        graph.node.insert(i, cast)
    return converted


def _fp16_converter():
    """``convert_float_to_float16`` from onnxruntime's transformer tools or onnxconverter-common; None if neither."""
    for module in ("onnxruntime.transformers.float16", "onnxconverter_common.float16"):
        try:
            return importlib.import_module(module).convert_float_to_float16
        except ImportError:
            continue
    return None


def convert_fp16(src_onnx: str | os.PathLike[str], dst_onnx: str | os.PathLike[str]) -> Path:
    """Write ``src_onnx`` with float16 weights and float32 inputs/outputs to ``dst_onnx``, atomically.

    Uses ``convert_float_to_float16(keep_io_types=True)`` of onnxruntime's transformer tools or of
    onnxconverter-common; raises :class:`ConfigError` when neither is installed. The EdgeSpec is
    re-tagged ``precision="fp16"``.
    """
    onnx = require_onnx()
    convert = _fp16_converter()
    if convert is None:
        raise ConfigError("fp16 conversion needs onnxruntime's transformer tools or onnxconverter-common; "
                          "neither is installed")
    src, dst = Path(src_onnx), Path(dst_onnx)
    if not src.is_file():
        raise DataError("no such ONNX file", src)
    with _quiet_root_logger():
        proto = convert(onnx.load(str(src)), keep_io_types=True)
    compact_names(proto)
    retag_precision(proto, "fp16")
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
    return dst
