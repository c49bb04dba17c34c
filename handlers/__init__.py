"""Built-in handlers, installed as ``ralph.handlers``."""
