"""The image builder: ketch's own Dockerfile parser (more of the builder follows)."""

from ketch.build.dockerfile import (
    Dockerfile,
    Heredoc,
    Instruction,
    dump,
    expand,
    parse,
)

__all__ = ["Dockerfile", "Heredoc", "Instruction", "dump", "expand", "parse"]
