import numpy as np
import pytest

from cardiodistill.errors import LeadError
from cardiodistill.signals import derive_limb_leads, normalize_lead_name


@pytest.mark.parametrize(
    "spelling, canonical",
    [("avr", "aVR"), ("Lead aVR", "aVR"), ("MDC_ECG_LEAD_AVR", "aVR"), ("MLII", "II"), ("D2", "II"),
     ("C1", "V1"), ("v6", "V6"), ("III", "III"), ("lead_I", "I"), ("V-4", "V4")],
)
def test_lead_name_spellings(spelling, canonical):
    assert normalize_lead_name(spelling) == canonical


def test_unknown_lead_name_is_a_lead_error():
    with pytest.raises(LeadError, match="unknown lead name 'PLETH'"):
        normalize_lead_name("PLETH")
    assert normalize_lead_name(" PLETH ", strict=False) == "PLETH"
    for channel in ("ECG 1", "2", "ecg3"):  # channel numbers are not lead names
        with pytest.raises(LeadError):
            normalize_lead_name(channel)


def test_limb_leads_from_i_and_ii_satisfy_einthoven_and_goldberger():
    rng = np.random.default_rng(0)
    i, ii = rng.normal(size=(2, 3, 500))
    limb = derive_limb_leads(i, ii)
    assert limb.shape == (3, 6, 500)
    I, II, III, aVR, aVL, aVF = np.moveaxis(limb, 1, 0)
    assert np.allclose(III, II - I) and np.allclose(aVR + aVL + aVF, 0, atol=1e-6)
    assert np.allclose(aVR, -(I + II) / 2) and np.allclose(aVL, I - II / 2) and np.allclose(aVF, II - I / 2)
    with pytest.raises(LeadError):
        derive_limb_leads(i, ii[:, :10])
