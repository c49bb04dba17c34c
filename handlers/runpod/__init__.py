"""RunPod, one provider of machines: its REST API (api.py), pods made and deleted, the dead-man's switch, the reaper."""
