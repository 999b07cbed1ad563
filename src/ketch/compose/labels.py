"""The labels compose puts on what it creates, by which it finds them again.

They are Docker Compose's own names, so ``docker compose`` and ``ketch compose``
see each other's containers, networks and volumes as one project's.
"""

from __future__ import annotations

PREFIX = "com.docker.compose."
PROJECT = PREFIX + "project"
SERVICE = PREFIX + "service"
NUMBER = PREFIX + "container-number"
ONEOFF = PREFIX + "oneoff"
CONFIG_HASH = PREFIX + "config-hash"
WORKING_DIR = PREFIX + "project.working_dir"
CONFIG_FILES = PREFIX + "project.config_files"
ENV_FILE = PREFIX + "project.environment_file"
VERSION = PREFIX + "version"
DEPENDS_ON = PREFIX + "depends_on"
IMAGE = PREFIX + "image"
REPLACE = PREFIX + "replace"
SLUG = PREFIX + "slug"
NETWORK = PREFIX + "network"
VOLUME = PREFIX + "volume"

# The compose version ketch writes into its labels and `version` prints: the
# Compose Specification release whose behaviour it follows.
COMPOSE_VERSION = "2.40.3"
