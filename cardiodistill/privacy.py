"""Pseudonyms: what an output may say about a patient or a file instead of its real identifier.

Every output the toolkit writes (caches' ``items.csv`` / ``index.csv``, ``metrics.json``,
``report.html``, console lines) names a record, a study or a patient by :func:`pseudonym` of its
identifier, never by the identifier itself: a file named after a medical record number, a
manifest's ``patient_id`` or a DICOM free-text field would otherwise leave the hospital inside a
report. The hash is keyed by ``$CARDIODISTILL_PSEUDONYM_KEY`` (empty by default), so a site that
sets its own key gets ids nobody outside can reverse by hashing candidate MRNs, and the same key
always gives the same pseudonym (caches and reports stay joinable). Showing real ids is an explicit
opt-in of the command that writes them.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["PSEUDONYM_ENV", "pseudonym"]

#: Environment variable holding the site's pseudonym key.
PSEUDONYM_ENV = "CARDIODISTILL_PSEUDONYM_KEY"


def pseudonym(value: str, key: str | None = None) -> str:
    """A keyed 16-hex-digit hash of ``value`` (key: ``key`` or ``$CARDIODISTILL_PSEUDONYM_KEY``)."""
    secret = (key if key is not None else os.environ.get(PSEUDONYM_ENV, "")).encode()
    return hashlib.blake2b(str(value).encode(), key=hashlib.sha256(secret).digest(), digest_size=8).hexdigest()
