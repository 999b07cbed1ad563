"""runtime.sync: the init's last message is read even when it closed with ours unread."""

from __future__ import annotations

import pytest

from ketch.errors import InvalidArgument, System
from ketch.runtime import sync


def test_error_after_a_reset_is_still_read() -> None:
    parent, child = sync.pair()
    sync.send(parent, sync.Kind.GO)          # the init fails before it reads this
    sync.send(child, sync.Kind.ERROR, text="exec: \"/etc\": permission denied",
              error="InvalidArgument")
    child.close()
    # The kernel reports ECONNRESET first (the GO was never read), then the message.
    with pytest.raises(InvalidArgument, match='exec: "/etc": permission denied'):
        sync.expect(parent, sync.Kind.READY)
    parent.close()


def test_a_reset_without_a_message_is_the_init_gone() -> None:
    parent, child = sync.pair()
    sync.send(parent, sync.Kind.GO)
    child.close()
    with pytest.raises(System, match="container init exited before it was ready"):
        sync.recv(parent)
    parent.close()
