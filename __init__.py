"""somna: continual-learning runs that alternate wake (test-time memory) and sleep (consolidation).

This file is the `somna` package itself; its subpackages are the folders beside it
(platform, learners, kernels, curricula, evals). The Python API lives in
somna.platform.api and is re-exported here lazily, so `import somna` (and the CLI)
stays light until a run is started:

    import somna
    run = somna.run("split-digits", learner="replay", seed=3)
    run.summary["acc"], run.matrix
"""

from __future__ import annotations

from typing import Any

API = ("config", "load_run", "run", "Run")


def __getattr__(name: str) -> Any:
    if name in API:
        from somna.platform import api

        return getattr(api, name)
    if name == "__version__":
        from somna.platform.api import package_version

        return package_version()
    raise AttributeError(f"module 'somna' has no attribute {name!r}")


__all__ = [*API, "__version__"]
