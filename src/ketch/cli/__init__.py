"""The ``ketch`` command line (Docker's command names and flags)."""
