"""`energy-loop`: one command for both pipelines. Exit 0 PASSED, 1 not passed, 2 bad input (one line), 130 / 143
interrupted (Ctrl-C / SIGTERM: one line).

    energy-loop run|validate|meters|promote|status|trigger|predict ...  the energy loop
    energy-loop cooling run|validate ...                    the cooling agent (`energy-cooling` is an alias)
    energy-loop webhook serve|register ...                  the champion guard (MLflow registry webhooks)

One module per group of commands, each a parser plus its handlers: `loops` (run, cooling run, validate,
meters), `trigger`, `registry` (promote, status, webhook), `predict`; `options` makes a loop's flags from its
request model (thresholds/request.py); `common` is the one error path and stopping; `app` the parser and `main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, prog: str = "energy-loop") -> int:
    """`energy-loop ARGS` (flows/cli/app.py); a Ctrl-C while its modules load ends in one line too."""
    try:
        from flows.cli import app
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C): stopped", file=sys.stderr)
        return 130
    return app.main(argv, prog)


def cooling_main(argv: Sequence[str] | None = None) -> int:
    """`energy-cooling ARGS`: the alias of `energy-loop cooling ARGS`."""
    return main(["cooling", *(sys.argv[1:] if argv is None else argv)], prog="energy-cooling")
