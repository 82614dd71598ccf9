"""``python -m uniret.eval ...`` is ``uniret eval ...``."""

from uniret.cli import main

raise SystemExit(main(command="eval"))
