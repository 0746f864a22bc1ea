"""The scheduling agent of the product page, on the appliance's SDK.

The boss writes asking for a meeting; the agent reads the calendar (the
``calendar_availability`` tool, capability ``read_calendar``), holds a slot
(``propose_meeting``) and proposes it by reply; the boss confirms; the agent
books it (``confirm_meeting``) and confirms by reply. A conflict bot's notices
reach it too, with ``read_calendar`` alone: whatever the agent then tries
beyond that, the appliance refuses before the calendar hears of it.

    agent.py             the wiring: webhooks in, a planner decides, the SDK acts (40 lines)
    planner.py           the deterministic planner (offline, no model)
    claude.py            the same job on the Claude Agent SDK, when ANTHROPIC_API_KEY is set
    calendar_service.py  the tool backend: free slots, holds, bookings, conflicts (stdlib HTTP)
    policy.toml          who may ask for what; appliance.toml: the sandbox with the [[tools]]
"""
