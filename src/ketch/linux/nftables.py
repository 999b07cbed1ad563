"""Running nftables scripts: libnftables in-process, else the ``nft`` binary.

A container's attach changes a few map elements; spawning ``nft`` costs ~2 ms,
libnftables (the library behind ``nft``) about a tenth of that, and a script
given to either is applied as one transaction: all of it or nothing.
Failures raise ``NftError`` carrying nft's own message.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
from typing import Any

from ketch.errors import System


class NftError(System):
    """nft refused a script; ``message`` is nft's error output."""


class Nft:
    """One libnftables context (or the nft binary when the library is missing)."""

    def __init__(self, *, prefer_library: bool = True) -> None:
        self._lib: Any = None
        self._ctx: Any = None
        self._lock = threading.Lock()
        if prefer_library:
            try:
                lib = ctypes.CDLL("libnftables.so.1")
            except OSError:
                lib = None
            if lib is not None:
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
                ctx = lib.nft_ctx_new(0)
                if ctx:
                    lib.nft_ctx_buffer_output(ctx)
                    lib.nft_ctx_buffer_error(ctx)
                    self._lib, self._ctx = lib, ctx
        if self._ctx is None and shutil.which("nft") is None:
            raise NftError("nftables is not available: neither libnftables nor nft found")

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def run(self, script: str) -> str:
        """Apply ``script`` (nft's text syntax) atomically; return nft's output."""
        if self._ctx is not None:
            with self._lock:
                rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
                out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
                err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
            if rc != 0:
                raise NftError(f"nft: {err.strip() or 'failed'}")
            return out
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise NftError(f"nft: {proc.stderr.strip() or 'failed'}")
        return proc.stdout

    def table_exists(self, family: str, table: str) -> bool:
        try:
            self.run(f"list table {family} {table}")
        except NftError:
            return False
        return True
