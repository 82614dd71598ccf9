"""``python -m uniret.index ...`` is ``uniret index ...``."""

from uniret.cli import main

raise SystemExit(main(command="index"))
