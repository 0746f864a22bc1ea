"""Content guards: the policy's patterns over what a reader of the message would see.

``normalize`` gives the canonical forms patterns are matched against; ``scan``
runs the policy's content guards over the readable text ``appliance.mail``
extracts.
"""

from appliance.guards.normalize import normalize, normalized_forms
from appliance.guards.scan import GuardHit, scan, scanned_parts

__all__ = [
    "GuardHit",
    "normalize",
    "normalized_forms",
    "scan",
    "scanned_parts",
]
