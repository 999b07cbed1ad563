"""The container supervisor: one lean process per daemon (see ``server``).

    python -I -m ketch.engine.supervisor --exec-root /run/ketch --root /var/lib/ketch

Modules: ``protocol`` (the messages), ``server`` (containers, reaping,
requests), ``stdio`` (output, input, attach), ``logs`` (json-file),
``records`` (exit records on disk), ``loop`` (the event loop).
"""
