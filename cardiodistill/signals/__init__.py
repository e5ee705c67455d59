"""ECG signal primitives: lead names and derivation, units, resampling, filters, quality, R-peaks."""

from .leads import LEADS_12, LIMB_LEADS, PRECORDIAL_LEADS, derive_limb_leads, normalize_lead_name

__all__ = ["LEADS_12", "LIMB_LEADS", "PRECORDIAL_LEADS", "derive_limb_leads", "normalize_lead_name"]
