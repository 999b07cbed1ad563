"""ketch's OCI runtime, as a library and as the ``ketch-runc`` command.

The engine's supervisor calls it in-process (no exec per container); ``ketch-runc``
wraps the same calls in runc's command line. The library surface lives in
``ketch.runtime.container`` (create/start/kill/delete/state/exec).
"""
