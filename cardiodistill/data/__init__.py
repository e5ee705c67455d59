"""Datasets on disk: the paired-study cache a cohort folder is read into (:mod:`.cohort`, :mod:`.paired`),
the ECG-window and video-clip caches of stage 1, the public data sets' adapters (:mod:`.datasets`), and the
streaming format for object storage and many GPUs (:mod:`.streaming`, on LitData)."""
