"""Task files and handlers for the engine's tests."""
