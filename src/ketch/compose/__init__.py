"""Compose: multi-service applications from compose files, run through the Engine API.

``loader`` reads the files (YAML, ``.env``, interpolation, ``include``, ``extends``,
several ``-f`` merged), ``normalize`` validates and gives the canonical model,
``convert`` turns a service into container create bodies, ``graph`` orders the
services by ``depends_on``, and ``project`` does the work of each command through
``ketch.client``, so it runs against ketchd and dockerd alike. Imports nothing here.
"""
