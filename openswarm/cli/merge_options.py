"""`--merge-option KEY=NUMBER`, as `openswarm demo` and `openswarm ledger genesis` take it."""

from __future__ import annotations

MERGE_OPTION_HELP = (
    "KEY=NUMBER for the merge method, e.g. server_lr=1.5 for fedavgm (repeat for more)."
)


def parse_merge_options(pairs: list[str]) -> dict[str, float | int]:
    """KEY=NUMBER pairs as a dict (integers stay integers, e.g. krum's f); ValueError
    naming a malformed one."""
    options: dict[str, float | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        number: float | int
        try:
            text = value.strip()
            number = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ValueError(f"--merge-option takes KEY=NUMBER (e.g. server_lr=1.5), got {pair!r}")
        options[key.strip()] = number
    return options
