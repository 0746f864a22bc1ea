"""``appliance doctor``: does the box work? Each check a line, each failing line with what to do."""

from appliance.doctor.findings import CHECKS, Diagnosis, Finding, render

__all__ = ["CHECKS", "Diagnosis", "Finding", "render"]
