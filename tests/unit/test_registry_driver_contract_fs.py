"""The storage driver contract run against the directory driver."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.registry_driver_contract import DriverContract

from ketch.registry.server.driver import StorageDriver
from ketch.registry.server.fsdriver import FSDriver


@pytest.fixture
def driver(tmp_path: Path) -> StorageDriver:
    return FSDriver(str(tmp_path / "store"))


class TestFSDriverContract(DriverContract):
    pass
