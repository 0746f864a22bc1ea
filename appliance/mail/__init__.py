"""Message bytes, read once: every component of the appliance reads a message through here.

``read_message`` is the byte-level reading (one rule for line ends, bounded
header work); ``parse_message`` the strict RFC 5322 parse the gate relies on;
``extract_readable`` the text a reader (agent or model) would see; ``trace``
the one rule for forged trace headers.
"""

from appliance.mail.address import ascii_address, ascii_domain, normalize_address
from appliance.mail.attachments import AttachmentInfo, attachment_part, list_attachments
from appliance.mail.parse import (
    POLICY,
    Mailbox,
    ParsedMessage,
    parse_message,
    parse_tree,
    sniff_message_id,
    thread_root,
)
from appliance.mail.reading import Reading, Unreadable, read_for_gate, unreadable_from
from appliance.mail.text import ReadableText, TextPart, decode_words, extract_readable, html_to_text
from appliance.mail.trace import DECISION_HEADER, is_forged, trace_fields, without_forged_trace
from appliance.mail.wire import HeaderField, MessageBytes, ReadingLimits, read_message, split_header

__all__ = [
    "DECISION_HEADER",
    "POLICY",
    "AttachmentInfo",
    "HeaderField",
    "Mailbox",
    "MessageBytes",
    "ParsedMessage",
    "ReadableText",
    "Reading",
    "ReadingLimits",
    "TextPart",
    "Unreadable",
    "ascii_address",
    "ascii_domain",
    "attachment_part",
    "decode_words",
    "extract_readable",
    "html_to_text",
    "is_forged",
    "list_attachments",
    "normalize_address",
    "parse_message",
    "parse_tree",
    "read_for_gate",
    "read_message",
    "sniff_message_id",
    "split_header",
    "thread_root",
    "trace_fields",
    "unreadable_from",
    "without_forged_trace",
]
