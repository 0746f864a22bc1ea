"""The appliance's one DuckDB file: the writer (``database``), the schema registry, and one module per
table family (``messages``, ``limits``, ``deliveries``, ``outbound``, ``audit``, ``jmap``), each the only
code that writes SQL on its tables."""
