"""The stage jobs: stage 1 (ECG, video pretraining), stage 2 (alignment), stage 3 (teacher, students),
and the demo that chains them. Importing this package registers the simulator as the data source kind
``"synth"`` (:mod:`.sources`).

* :mod:`.stage1`: :func:`pretrain_ecg`, :func:`pretrain_video`;
* :mod:`.stage2`: :func:`run_align` (and :func:`encoder_config`, :func:`unaligned_fusion`);
* :mod:`.stage3`: :func:`run_finetune`, :func:`run_distill` (and :func:`student_leads`);
* :mod:`.demo`: :func:`run_pipeline`;
* :mod:`.common`: :func:`fusion_of`, :func:`spec_of` (the cohort cache a model file needs).

The job functions are imported on first use, so registering the simulator does not load Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import sources  # noqa: F401  (registers the simulator with the data layer)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs (exported through __getattr__)
    from .common import fusion_of, spec_of  # noqa: F401
    from .demo import run_pipeline  # noqa: F401
    from .stage1 import pretrain_ecg, pretrain_video  # noqa: F401
    from .stage2 import encoder_config, run_align, unaligned_fusion  # noqa: F401
    from .stage3 import run_distill, run_finetune, student_leads  # noqa: F401

_WHERE = {
    "fusion_of": "common",
    "spec_of": "common",
    "run_pipeline": "demo",
    "pretrain_ecg": "stage1",
    "pretrain_video": "stage1",
    "encoder_config": "stage2",
    "run_align": "stage2",
    "unaligned_fusion": "stage2",
    "run_distill": "stage3",
    "run_finetune": "stage3",
    "student_leads": "stage3",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
