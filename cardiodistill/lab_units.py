"""The canonical lab units: part of the data contract ("labs: name -> value in canonical units").

Every analyte a panel may hold has one canonical unit; readers convert into it (see
:func:`cardiodistill.synth.labs.to_canonical` for the unit table), the labs encoder and its
normaliser take values in it, and the order of :data:`LAB_UNITS` is the default column order of
a panel. It sits low in the package so every layer can read it without importing the simulator.
"""

from __future__ import annotations

#: canonical name -> canonical unit; also the default column order of a lab panel.
LAB_UNITS: dict[str, str] = {
    "nt_probnp": "pg/mL",
    "bnp": "pg/mL",
    "troponin_t_hs": "ng/L",
    "potassium": "mmol/L",
    "sodium": "mmol/L",
    "creatinine": "umol/L",
    "egfr": "mL/min/1.73m2",
    "haemoglobin": "g/dL",
    "glucose": "mmol/L",
    "ldl": "mmol/L",
    "crp": "mg/L",
}
