"""Operating a swarm as its admins: contexts (a ledger and an admin identity by name) and
`Admin`, what the admin commands do, from Python."""

from openswarm.admin.client import Admin, AdminError
from openswarm.admin.contexts import (
    Context,
    ContextError,
    ContextStore,
    check_endpoints,
    contexts_file,
    resolve,
)

__all__ = ["Admin", "AdminError", "Context", "ContextError", "ContextStore", "check_endpoints",
           "contexts_file", "resolve"]  # fmt: skip
