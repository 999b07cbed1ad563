"""ketch: a container engine in Python that works with the tools people already use."""

__version__ = "0.1.0"
