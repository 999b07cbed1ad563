"""ketchd's composition root: flags and daemon.json, locks, signals, and the API server.

It is the one place allowed to wire the host (ketch.linux) to the API
(ketch.api), which itself never touches the kernel.
"""
