"""KeyStone: a light edge agent that installs, supervises and updates components."""

__version__ = "0.1.0"

__all__ = ["__version__"]
