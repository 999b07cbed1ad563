"""The daemon's core: containers, their supervisor, logs, exits.

``ketch.engine.supervisor`` is the one process per daemon that forks the
containers, holds their stdio and writes their logs; ``supervisor_client`` is
how ketchd talks to it.
"""
