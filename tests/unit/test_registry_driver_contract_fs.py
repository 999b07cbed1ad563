"""The storage driver contract run against the directory driver."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.registry_driver_contract import DriverContract

from ketch.registry.server.driver import StorageDriver

fsdriver = pytest.importorskip(
    "ketch.registry.server.fsdriver",
    reason="the directory driver (ketch.registry.server.fsdriver) is not there yet")


@pytest.fixture
def driver(tmp_path: Path) -> StorageDriver:
    return fsdriver.FSDriver(str(tmp_path / "store"))


class TestFSDriverContract(DriverContract):
    # Only this error: any other failure of the test still fails it.
    @pytest.mark.xfail(raises=NotADirectoryError,
                       reason="FSDriver.delete of a path under a file raises NotADirectoryError, "
                              "not PathNotFound (reported to the lead)")
    def test_delete_file(self, driver: StorageDriver) -> None:
        super().test_delete_file(driver)
