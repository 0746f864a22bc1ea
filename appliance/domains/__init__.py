"""Mail domains: their DKIM keys, the DNS records they need (the manifest), the MTA-STS policy, and checks.

``manifest`` (pure) says what to publish; ``render`` writes it as JSON, a BIND
zone snippet or a table; ``mta_sts`` makes the policy and its id; ``verify``
compares what DNS answers with the manifest (pure) and looks it up (adapter);
``keys`` finds the DKIM public keys; ``service`` ties them to the store.
"""
