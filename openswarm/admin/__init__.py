"""Operating a swarm as its admins: contexts (a ledger and an admin identity by name)."""

from openswarm.admin.contexts import (
    Context,
    ContextError,
    ContextStore,
    check_endpoints,
    contexts_file,
    resolve,
)

__all__ = ["Context", "ContextError", "ContextStore", "check_endpoints", "contexts_file",
           "resolve"]  # fmt: skip
