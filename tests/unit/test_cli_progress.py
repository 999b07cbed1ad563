"""The progress stream drawn as the docker CLI 28 draws it.

The expected bytes were captured from docker 28.2.2 reading the same messages
(a fake daemon on a unix socket; ``script`` for the terminal case).
"""

from __future__ import annotations

import io

import pytest

from ketch.cli import progress
from ketch.client import StreamError

PULL = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
    {"status": "Downloading", "progressDetail": {"current": 1000, "total": 3000},
     "progress": "x", "id": "aaa"},
    {"status": "Download complete", "progressDetail": {}, "id": "aaa"},
    {"status": "Pull complete", "progressDetail": {}, "id": "aaa"},
    {"status": "Digest: sha256:abc"},
    {"status": "Status: Downloaded newer image for busybox:latest"},
]


class Out(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_plain_lines_without_live_figures() -> None:
    out = Out(False)
    progress.display(PULL, out)
    assert out.getvalue() == (
        "latest: Pulling from library/busybox\naaa: Pulling fs layer\naaa: Download complete\n"
        "aaa: Pull complete\nDigest: sha256:abc\n"
        "Status: Downloaded newer image for busybox:latest\n")


def test_terminal_rewrites_each_layer_line_in_place() -> None:
    out = Out(True)
    d = progress.Display(out, width=0)      # the width docker saw in `script`'s terminal
    for m in PULL:
        d.show(m)
    assert out.getvalue() == (
        "latest: Pulling from library/busybox\n\n"
        "\x1b[1A\x1b[2K\raaa: Pulling fs layer \r\x1b[1B"
        "\x1b[1A\x1b[2K\raaa: Downloading      1kB/3kB\r\x1b[1B"
        "\x1b[1A\x1b[2K\raaa: Download complete \r\x1b[1B"
        "\x1b[1A\x1b[2K\raaa: Pull complete \r\x1b[1B"
        "Digest: sha256:abc\nStatus: Downloaded newer image for busybox:latest\n")


def test_two_layers_keep_their_own_lines() -> None:
    out = Out(True)
    d = progress.Display(out, width=0)
    d.show({"status": "Waiting", "progressDetail": {}, "id": "one"})
    d.show({"status": "Waiting", "progressDetail": {}, "id": "two"})
    d.show({"status": "Done", "progressDetail": {}, "id": "one"})
    text = out.getvalue()
    # "one" is two lines above the cursor once "two" exists
    assert text.endswith("\x1b[2A\x1b[2K\rone: Done \r\x1b[2B")


def test_bar_and_time_left_on_a_wide_terminal() -> None:
    detail = {"current": 1_500_000, "total": 3_000_000, "start": 100}
    assert progress.progress_text(detail, 200, now=110.0) == (
        "[" + "=" * 25 + ">" + " " * 25 + "]    1.5MB/3MB 10s")
    assert progress.progress_text(detail, 80, now=110.0) == "   1.5MB/3MB 10s"
    assert progress.progress_text(detail, 40, now=110.0) == "   1.5MB/3MB"
    assert progress.progress_text({"current": 5}, 200) == "      5B"
    assert progress.progress_text({}, 200) == ""
    assert progress.progress_text({"current": 4, "total": 3}, 0) == "      4B"
    assert progress.progress_text({"current": 2, "total": 9, "units": "layers"}, 0) == \
        "2/9 layers"
    assert progress.go_duration(3725) == "1h2m5s"
    assert progress.go_duration(90) == "1m30s"


def test_a_line_without_id_ends_the_layer_history() -> None:
    out = Out(True)
    d = progress.Display(out, width=0)
    d.show({"status": "Waiting", "progressDetail": {}, "id": "one"})
    d.show({"status": "v2: Pulling from x", "id": "v2"})
    d.show({"status": "Waiting", "progressDetail": {}, "id": "one"})
    # after the other line "one" is a new line again, not two lines up
    assert out.getvalue().endswith("\n\x1b[1A\x1b[2K\rone: Waiting \r\x1b[1B")


def test_aux_is_not_printed_and_quiet_prints_nothing() -> None:
    out = Out(False)
    progress.display([{"status": "x: digest: sha256:1 size: 2"},
                      {"progressDetail": {}, "aux": {"Tag": "x", "Digest": "sha256:1"}}], out)
    assert out.getvalue() == "x: digest: sha256:1 size: 2\n"
    out = Out(False)
    progress.display(PULL, out, quiet=True)
    assert out.getvalue() == ""


def test_error_in_stream_after_the_lines_before_it() -> None:
    def stream():  # type: ignore[no-untyped-def]
        yield PULL[0]
        raise StreamError("manifest unknown")

    out = Out(False)
    with pytest.raises(StreamError, match="manifest unknown"):
        progress.display(stream(), out)
    assert out.getvalue() == "latest: Pulling from library/busybox\n"
