"""Site names and where each one lives: the one description is :mod:`lrp_llm.archs.sites` (the core's
component relevance reads it too); patching re-exports it under its old name."""

from lrp_llm.archs.sites import (
    EXPERT_KINDS,
    INDEXED_KINDS,
    POSITION_KINDS,
    Location,
    Site,
    SiteMap,
    normalise_positions,
    site_map,
)

__all__ = [
    "EXPERT_KINDS",
    "INDEXED_KINDS",
    "POSITION_KINDS",
    "Location",
    "Site",
    "SiteMap",
    "normalise_positions",
    "site_map",
]
