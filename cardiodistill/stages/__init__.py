"""The stage jobs: stage 1 (ECG, video pretraining), stage 2 (alignment), stage 3 (teacher, students),
and the demo that chains them. Importing this package registers the simulator as the data source kind
``"synth"`` (:mod:`.sources`)."""

from . import sources  # noqa: F401  (registers the simulator with the data layer)
