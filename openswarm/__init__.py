"""openswarm: open swarm learning — sites train one model together, coordinated by a ledger."""

__version__ = "0.1.0"

DEFAULT_CONTRACT = "defaultbb.cqdb.sml.hpe"
