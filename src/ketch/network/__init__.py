"""Container networking: the default bridge network (bridge.py), IPAM (ipam.py),
published ports (ports.py, nat.py), and the per-container /etc files (etcfiles.py)."""
