"""The application around the numerical library: command line, report, models, sweeps."""
__all__: list[str] = []
