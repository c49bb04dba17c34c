"""ralph: executable RALPH task files."""

__version__ = "0.1.0"
