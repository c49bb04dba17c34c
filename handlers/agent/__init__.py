"""``agent``: a coding-agent CLI does the task; ralph decides what is done.

``handler.py`` is the loop (iterations, circuit breaker, resume), ``prompt.py`` what the agent
is told, ``process.py`` how one iteration's process runs and is logged, ``guard.py`` how the
task's boxes and status stay ralph's.
"""

from .handler import AgentHandler

__all__ = ["AgentHandler"]
