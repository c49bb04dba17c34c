"""Pods: where a task's commands run (RunPod, an SSH host, this machine)."""
