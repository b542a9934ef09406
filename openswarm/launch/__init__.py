"""Local launcher: run N copies of a training script as a swarm around an embedded ledger."""

from openswarm.launch.launcher import (
    LaunchError,
    PeerOutcome,
    SwarmRunResult,
    resolve_data_dirs,
    run_swarm,
)
from openswarm.launch.progress import (
    PeerStatus,
    ProgressPrinter,
    SwarmProgress,
    build_progress,
    format_summary,
)

__all__ = [
    "LaunchError",
    "PeerOutcome",
    "PeerStatus",
    "ProgressPrinter",
    "SwarmProgress",
    "SwarmRunResult",
    "build_progress",
    "format_summary",
    "resolve_data_dirs",
    "run_swarm",
]
