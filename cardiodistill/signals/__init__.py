"""ECG signal primitives: lead names and derivation (more arrive with the clinical input issue)."""

from .leads import LEADS_12, LIMB_LEADS, PRECORDIAL_LEADS, derive_limb_leads

__all__ = ["LEADS_12", "LIMB_LEADS", "PRECORDIAL_LEADS", "derive_limb_leads"]
