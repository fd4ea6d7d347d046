"""The application around the numerical library: the command line (``tiltlab.app.cli``),
the models of experiments (``tiltlab.app.models``), the experiments and the report of
``tiltlab reproduce`` (``tiltlab.app.experiments``, ``tiltlab.app.report``), and the sweeps
(``tiltlab.app.sweep``: ``tiltlab.sweep``).

The application imports the library through its public API only (``import tiltlab``,
``tiltlab.best_of_n``, ``tiltlab.Memoryless``, ``tiltlab.special``, ...); the library never
imports the application, except the package façade ``tiltlab/__init__.py``, which re-exports
its public names (``tiltlab.load_model``, ``tiltlab.reproduce``, ``tiltlab.sweep``) and keeps
the old module paths (``tiltlab.models``, ``tiltlab.report``, ``tiltlab.experiments``,
``tiltlab.cli``) as aliases of these modules.  tests/test_layout.py checks both arrows.
"""

__all__: list[str] = []
