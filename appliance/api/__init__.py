"""HTTP API handlers, one module per resource; ``agent_and_admin_routes`` lists what every mode serves."""

from __future__ import annotations

__all__ = ["agent_and_admin_routes"]

from litestar.types import ControllerRouterHandler

from appliance.api.audit import AuditController
from appliance.api.blobs import blob_router
from appliance.api.deliveries import DeliveryController, EndpointController
from appliance.api.domains import DomainController, mta_sts_policy
from appliance.api.events import event_stream_handler
from appliance.api.messages import MessageController
from appliance.api.metrics import metrics
from appliance.api.outbound import outbound_router
from appliance.api.quarantine import QuarantineController
from appliance.api.replay import ReplayController
from appliance.api.reports import ReportController
from appliance.api.tokens import introspect_token
from appliance.api.tools import tools_router
from appliance.api.usage import report_usage
from appliance.config import ApplianceConfig


def agent_and_admin_routes(config: ApplianceConfig) -> list[ControllerRouterHandler]:
    """The REST API and the event stream: the same in both modes (JMAP and Stalwart's hook are the mode's own)."""
    return [AuditController, QuarantineController, report_usage, DeliveryController, EndpointController,
            event_stream_handler, introspect_token, MessageController, metrics, ReportController,
            DomainController, mta_sts_policy, ReplayController,
            # the send half: each with its body limit and its {"error", "detail"} errors
            outbound_router(config), blob_router(config), tools_router()]
