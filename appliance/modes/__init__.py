"""The two ways the appliance runs, as Litestar InitPlugins: ``sandbox`` (its own SMTP server, the local
store) and ``stalwart`` (behind Stalwart's MTA hook). Each mounts its routes, starts its parts and
provides its services to the handlers by dependency injection."""
