"""``python -m uniret.retriever ...`` is ``uniret search ...`` (query a saved index)."""

from uniret.cli import main

raise SystemExit(main(command="search"))
