"""Public ECG datasets as lazy ``(EcgRecord, label)`` sequences with their standard splits.

=================  ===============================================  ===========================
class              data                                             label
=================  ===============================================  ===========================
:class:`PTBXL`     PTB-XL, PhysioNet layout or the z-scored subset  multi-hot SCP task classes
:class:`CinC2017`  CinC 2017 single-lead AliveCor, 300 Hz           index into N, A, O, ~
:class:`CinC2021`  CinC 2021 12-lead, SNOMED-CT ``# Dx:`` headers   multi-hot PTB-XL classes
:class:`MITBIH`    MIT-BIH Arrhythmia, 360 Hz Holter + ``.atr``     beats in AAMI N, S, V, F, Q
=================  ===============================================  ===========================

Each keeps one row per record in ``frame`` (``records`` for MIT-BIH) and reads a signal only when
indexed. :mod:`.snomed` maps SNOMED-CT codes to PTB-XL SCP statements.
"""

from .cinc2017 import CinC2017
from .cinc2021 import CinC2021
from .mitbih import MITBIH, Beats
from .ptbxl import PTBXL
from .snomed import SNOMED_TO_SCP, map_snomed

__all__ = ["MITBIH", "PTBXL", "SNOMED_TO_SCP", "Beats", "CinC2017", "CinC2021", "map_snomed"]
