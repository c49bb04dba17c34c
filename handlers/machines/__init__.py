"""Machines: where a task's commands run — a RunPod pod, an SSH host, this machine — and what any machine does:
commands, transfers, tunnels, services, the heartbeat."""
