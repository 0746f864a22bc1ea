"""Estimated tokens of what the agent will read.

The estimate is ``ceil(characters / 4)`` over the subject, the body text the
agent is given and its text attachments: the usual rule of thumb for English
text with current tokenizers. It only has to be stable and roughly right;
agents report their real usage through the API, which is charged on top.
"""

from __future__ import annotations

__all__ = ["estimate_tokens"]

from appliance.mail import ReadableText

CHARS_PER_TOKEN = 4


def estimate_tokens(readable: ReadableText) -> int:
    """Tokens the agent will spend reading this message."""
    chars = len(readable.agent_text)
    for part in readable.parts:
        if not part.derived and (part.where == "subject" or part.where.startswith("attachment")):
            chars += len(part.text)
    return -(-chars // CHARS_PER_TOKEN)
