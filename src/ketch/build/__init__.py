"""The image builder: Dockerfile parser, .dockerignore, COPY/ADD, the executor.

Nothing is imported here: ``ketch build`` loads only the modules it uses, so its
start-up stays short (import ``ketch.build.dockerfile`` and friends directly).
"""
