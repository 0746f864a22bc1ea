"""Operator tools: services an agent may call through the appliance, within its sender's grant.

The operator lists them in the configuration (``[[tools]]``: name, url,
capability, timeout, description, input schema). ``POST /api/v1/tools/{name}``
with the agent's key and a capability token granting the tool's capability
forwards the JSON body to the tool (``forward``); outside the grant nothing is
forwarded. Every call and every refusal is audited.
"""

from appliance.tools.forward import ToolAnswer, ToolInfo, Tools

__all__ = ["ToolAnswer", "ToolInfo", "Tools"]
