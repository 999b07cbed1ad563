"""Thin typed wrappers over the kernel. Knows nothing of containers.

Every kernel side effect of ketch lives below this package, behind small
functions whose names say what they do, so the layers above read as intent and
unit tests can replace the kernel with a recorded fake (``linux.fake``).
"""
