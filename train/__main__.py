"""``python -m uniret.train ...`` is ``uniret train ...``."""

from uniret.cli import main

raise SystemExit(main(command="train"))
