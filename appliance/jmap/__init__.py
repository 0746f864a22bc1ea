"""JMAP for agents (RFC 8620 core, RFC 8621 mail), served from the sandbox's own store.

``proto`` is the wire; ``router`` runs a request; one module per data type
(``mailbox``, ``email``, ``thread``, ``snippet``, ``identity``,
``submission``) holds its methods; ``changes`` the states and their log;
``local`` the tables of the JMAP view over the store; ``cache`` the
in-memory list index; ``mime`` and ``compose`` read and write message bytes;
``push`` the EventSource; ``session`` the Session resource; ``service`` ties
them to a running appliance. Other rooms call ``changes.record_created`` when
they store mail an agent may see.
"""
