"""A self-hosted mail appliance that gives AI agents their own email, behind a policy gate."""
