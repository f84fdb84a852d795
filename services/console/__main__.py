"""``python -m services.console`` runs the service; ``... rebuild [--compare]`` rebuilds
its read models from the log into a fresh schema and compares them with the live ones."""

import sys

if sys.argv[1:2] == ["rebuild"]:
    from services.console.rebuild import main as rebuild

    raise SystemExit(rebuild(sys.argv[2:]))

from services.console.app import SPEC
from services.runtime.service import main

main(SPEC)
