"""Content guards: a message as its reader would see it, and the policy's patterns over it.

``extract_readable`` turns a parsed message into readable text (also what the
agent is shown and what tokens are estimated from); ``normalize`` gives the
canonical form patterns are matched against; ``scan`` runs the policy's
content guards.
"""

from appliance.guards.extract import (
    ReadableText,
    TextPart,
    decode_words,
    extract_readable,
    html_to_text,
)
from appliance.guards.normalize import normalize, normalized_forms
from appliance.guards.scan import GuardHit, scan, scanned_parts

__all__ = [
    "GuardHit",
    "ReadableText",
    "TextPart",
    "decode_words",
    "extract_readable",
    "html_to_text",
    "normalize",
    "normalized_forms",
    "scan",
    "scanned_parts",
]
