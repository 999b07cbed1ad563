"""Fixtures every integration module may use without importing them.

They live with the tests that grew them (``test_daemon_system``: a private
ketchd; ``test_daemon_images``: the busybox archive; ``refdockerd``: the
reference dockerd; ``registries``: registries and moto's S3 on loopback;
``registry_client_support``: the registry client) and are registered here
once. ``loaded_ketchd`` is a private ketchd with busybox loaded, which most
container tests start from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.integration.refdockerd import ref_dockerd  # noqa: F401 - a fixture
from tests.integration.registries import moto, start_registry  # noqa: F401 - fixtures
from tests.integration.registry_client_support import regs  # noqa: F401 - a fixture
from tests.integration.test_daemon_images import busybox_archive  # noqa: F401 - a fixture
from tests.integration.test_daemon_system import (  # noqa: F401 - start_ketchd is a fixture
    Ketchd,
    docker,
    start_ketchd,
)


@pytest.fixture
def loaded_ketchd(start_ketchd: Callable[..., Ketchd],  # noqa: F811
                  busybox_archive: Path) -> Iterator[Ketchd]:  # noqa: F811
    k = start_ketchd()
    out = docker(k, "load", "-i", str(busybox_archive))
    assert out.returncode == 0, out.stderr
    yield k
