"""ketch.cli.views: Engine API JSON -> what docker images/history/system df print.

The fixtures below are real: the JSON bodies dockerd 20.10 returned for a few
imported images, a legacy-builder build and some containers and volumes, and
what the docker CLI 28.2.2 printed for them at ``NOW`` (TZ=UTC). Docker
orders the rows of one image's repositories by Go map iteration, which is
random, so the outputs of those runs are compared line by line where noted.
"""

from __future__ import annotations

import json
import time

import pytest

from ketch.cli import views
from ketch.cli.formatting import TemplateError


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# Recorded from dockerd 20.10 (GET /images/json, /images/hist:1/history, /system/df,
# trimmed of fields the CLI does not read) and from the docker CLI 28.2.2.
NOW = 1796108989
IMAGES = [{'Containers': -1,
  'Created': 1796108985,
  'Id': 'sha256:6d837ee301f1885c473552f3aeeaff9a7a9378ddce3e86b1c7bd04154eb193d9',
  'Labels': {'x': 'y'},
  'RepoDigests': None,
  'RepoTags': ['hist:1'],
  'SharedSize': -1,
  'Size': 2289550},
 {'Containers': -1,
  'Created': 1796108160,
  'Id': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
  'Labels': None,
  'RepoDigests': None,
  'RepoTags': ['bb2:latest'],
  'SharedSize': -1,
  'Size': 1982280},
 {'Containers': -1,
  'Created': 1796108150,
  'Id': 'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704',
  'Labels': None,
  'RepoDigests': None,
  'RepoTags': ['127.0.0.1:5317/small:one', '127.0.0.1:5317/small:two', 'small:one'],
  'SharedSize': -1,
  'Size': 2},
 {'Containers': -1,
  'Created': 1796108150,
  'Id': 'sha256:ed6aa9374a70c9fa3223d753c9488fa53cdde8b4fc2d4b8cebcec005a0eb450f',
  'Labels': None,
  'RepoDigests': ['<none>@<none>'],
  'RepoTags': ['<none>:<none>'],
  'SharedSize': -1,
  'Size': 2},
 {'Containers': -1,
  'Created': 1796108150,
  'Id': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
  'Labels': None,
  'RepoDigests': None,
  'RepoTags': ['busybox:1.0', 'busybox:latest', 'example.com/x/bb:v2'],
  'SharedSize': -1,
  'Size': 1982259}]
HISTORY = [{'Comment': '',
  'Created': 1796108985,
  'CreatedBy': '/bin/sh -c #(nop)  CMD ["sh" "-c" "echo 你好世界你好世界你好世界你好世界你好世界你好世界"]',
  'Id': 'sha256:6d837ee301f1885c473552f3aeeaff9a7a9378ddce3e86b1c7bd04154eb193d9',
  'Size': 0,
  'Tags': ['hist:1']},
 {'Comment': '',
  'Created': 1796108985,
  'CreatedBy': '/bin/sh -c #(nop)  LABEL x=y',
  'Id': 'sha256:995caab3c1f11d8f981fdd0dba190753d9d34f8dd0f3cd3d8f6f67f6b876ae2c',
  'Size': 0,
  'Tags': None},
 {'Comment': '',
  'Created': 1796108985,
  'CreatedBy': '/bin/sh -c echo "a very long command line that certainly exceeds forty five '
               'characters" > /f && dd if=/dev/zero of=/g bs=1k count=300 2>/dev/null',
  'Id': 'sha256:083f9d1b1dc421e89d3aebc0ad2e5fcd54bead9a685686a1c14ea3ce5fe62e3a',
  'Size': 307270,
  'Tags': None},
 {'Comment': '',
  'Created': 1796108984,
  'CreatedBy': '/bin/sh -c #(nop)  ENV A=1 B=2',
  'Id': 'sha256:953a5ab12334d6fb3e25dd2bd2a56deac5c2db1a1d6c5c744ac0ef8eae4f6481',
  'Size': 0,
  'Tags': None},
 {'Comment': 'Imported from -',
  'Created': 1796108160,
  'CreatedBy': '',
  'Id': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
  'Size': 1982280,
  'Tags': ['bb2:latest']}]
DF = {'BuildCache': None,
 'BuilderSize': 0,
 'Containers': [{'Command': 'sleep 3000',
                 'Created': 1796108160,
                 'Id': '31ba57c7a87b47d93af0264f148a058f443ea3630a32b901ccce9ae082f1b0c3',
                 'Image': 'bb2',
                 'ImageID': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
                 'Labels': {},
                 'Mounts': [{'Driver': 'local',
                             'Name': 'vol2',
                             'Source': '/tmp/fmtref/root/volumes/vol2/_data',
                             'Type': 'volume'}],
                 'Names': ['/c4'],
                 'Ports': [],
                 'SizeRootFs': 1982280,
                 'State': 'running',
                 'Status': 'Up 13 minutes'},
                {'Command': "sh -c 'echo abc > /data/f; dd if=/dev/zero of=/x bs=1k count=1500 "
                            "2>/dev/null'",
                 'Created': 1796108160,
                 'Id': 'd54b140349672295848dcbbe4651127dba6c4ffd9b3ac38c937f32e81808f58d',
                 'Image': 'bb2',
                 'ImageID': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
                 'Labels': {},
                 'Mounts': [{'Driver': 'local',
                             'Name': 'vol1',
                             'Source': '/tmp/fmtref/root/volumes/vol1/_data',
                             'Type': 'volume'}],
                 'Names': ['/c5'],
                 'Ports': [],
                 'SizeRootFs': 3518280,
                 'SizeRw': 1536000,
                 'State': 'exited',
                 'Status': 'Exited (0) 13 minutes ago'},
                {'Command': 'sleep 3000',
                 'Created': 1796108156,
                 'Id': '65707662ad12f7da81d92652da3a869b94b876554bc6b96f9b066622595ad207',
                 'Image': 'busybox',
                 'ImageID': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
                 'Labels': {},
                 'Mounts': [],
                 'Names': ['/c3'],
                 'Ports': [],
                 'SizeRootFs': 1982259,
                 'State': 'created',
                 'Status': 'Created'},
                {'Command': '/a',
                 'Created': 1796108156,
                 'Id': 'fb94e954cdd16c447b64493178693eeb3001837f749b4f77afd9a8ea192a1492',
                 'Image': 'small:one',
                 'ImageID': 'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704',
                 'Labels': {},
                 'Mounts': [],
                 'Names': ['/c2'],
                 'Ports': [],
                 'SizeRootFs': 2,
                 'State': 'created',
                 'Status': 'Created'},
                {'Command': "sh -c 'echo abc > /data/f; echo 123456 > /x'",
                 'Created': 1796108156,
                 'Id': '331b138a99cbc6658e97447c09f99094507d63f7c42e29d63cc2008b46957a26',
                 'Image': 'busybox',
                 'ImageID': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
                 'Labels': {},
                 'Mounts': [{'Driver': 'local',
                             'Name': 'vol1',
                             'Source': '/tmp/fmtref/root/volumes/vol1/_data',
                             'Type': 'volume'}],
                 'Names': ['/c1'],
                 'Ports': [],
                 'SizeRootFs': 1982259,
                 'State': 'created',
                 'Status': 'Created'}],
 'Images': [{'Containers': 0,
             'Created': 1796108985,
             'Id': 'sha256:6d837ee301f1885c473552f3aeeaff9a7a9378ddce3e86b1c7bd04154eb193d9',
             'Labels': {'x': 'y'},
             'RepoDigests': None,
             'RepoTags': ['hist:1'],
             'SharedSize': 1982280,
             'Size': 2289550},
            {'Containers': 2,
             'Created': 1796108160,
             'Id': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
             'Labels': None,
             'RepoDigests': None,
             'RepoTags': ['bb2:latest'],
             'SharedSize': 1982280,
             'Size': 1982280},
            {'Containers': 1,
             'Created': 1796108150,
             'Id': 'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704',
             'Labels': None,
             'RepoDigests': None,
             'RepoTags': ['127.0.0.1:5317/small:one', '127.0.0.1:5317/small:two', 'small:one'],
             'SharedSize': 2,
             'Size': 2},
            {'Containers': 0,
             'Created': 1796108150,
             'Id': 'sha256:ed6aa9374a70c9fa3223d753c9488fa53cdde8b4fc2d4b8cebcec005a0eb450f',
             'Labels': None,
             'RepoDigests': ['<none>@<none>'],
             'RepoTags': ['<none>:<none>'],
             'SharedSize': 2,
             'Size': 2},
            {'Containers': 2,
             'Created': 1796108150,
             'Id': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
             'Labels': None,
             'RepoDigests': None,
             'RepoTags': ['busybox:1.0', 'busybox:latest', 'example.com/x/bb:v2'],
             'SharedSize': 0,
             'Size': 1982259}],
 'LayersSize': 4271811,
 'Volumes': [{'Driver': 'local', 'Name': 'vol1', 'UsageData': {'RefCount': 2, 'Size': 4}},
             {'Driver': 'local', 'Name': 'vol2', 'UsageData': {'RefCount': 1, 'Size': 0}}]}
IMAGES_DEFAULT = (
    'REPOSITORY             TAG       IMAGE ID       CREATED          SIZE\n'
    'hist                   1         6d837ee301f1   4 seconds ago    2.29MB\n'
    'bb2                    latest    5ce69a713924   13 minutes ago   1.98MB\n'
    '127.0.0.1:5317/small   one       2ea181aa7a2a   13 minutes ago   2B\n'
    '127.0.0.1:5317/small   two       2ea181aa7a2a   13 minutes ago   2B\n'
    'small                  one       2ea181aa7a2a   13 minutes ago   2B\n'
    '<none>                 <none>    ed6aa9374a70   13 minutes ago   2B\n'
    'busybox                1.0       47a3820c822d   13 minutes ago   1.98MB\n'
    'busybox                latest    47a3820c822d   13 minutes ago   1.98MB\n'
    'example.com/x/bb       v2        47a3820c822d   13 minutes ago   1.98MB\n'
)
IMAGES_DIGESTS = (
    'REPOSITORY             TAG       DIGEST    IMAGE ID       CREATED          SIZE\n'
    'hist                   1         <none>    6d837ee301f1   4 seconds ago    2.29MB\n'
    'bb2                    latest    <none>    5ce69a713924   13 minutes ago   1.98MB\n'
    'busybox                1.0       <none>    47a3820c822d   13 minutes ago   1.98MB\n'
    'busybox                latest    <none>    47a3820c822d   13 minutes ago   1.98MB\n'
    'example.com/x/bb       v2        <none>    47a3820c822d   13 minutes ago   1.98MB\n'
    'small                  one       <none>    2ea181aa7a2a   13 minutes ago   2B\n'
    '127.0.0.1:5317/small   one       <none>    2ea181aa7a2a   13 minutes ago   2B\n'
    '127.0.0.1:5317/small   two       <none>    2ea181aa7a2a   13 minutes ago   2B\n'
    '<none>                 <none>    <none>    ed6aa9374a70   13 minutes ago   2B\n'
)
IMAGES_QUIET = (
    '6d837ee301f1\n'
    '5ce69a713924\n'
    '2ea181aa7a2a\n'
    '2ea181aa7a2a\n'
    '2ea181aa7a2a\n'
    'ed6aa9374a70\n'
    '47a3820c822d\n'
    '47a3820c822d\n'
    '47a3820c822d\n'
)
IMAGES_NOTRUNC = (
    'IMAGE ID                                                                  REPOSITORY             TAG       SIZE\n'
    'sha256:6d837ee301f1885c473552f3aeeaff9a7a9378ddce3e86b1c7bd04154eb193d9   hist                   1         2.29MB\n'
    'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9   bb2                    latest    1.98MB\n'
    'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1   busybox                1.0       1.98MB\n'
    'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1   busybox                latest    1.98MB\n'
    'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1   example.com/x/bb       v2        1.98MB\n'
    'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704   127.0.0.1:5317/small   one       2B\n'
    'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704   127.0.0.1:5317/small   two       2B\n'
    'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704   small                  one       2B\n'
    'sha256:ed6aa9374a70c9fa3223d753c9488fa53cdde8b4fc2d4b8cebcec005a0eb450f   <none>                 <none>    2B\n'
)
IMAGES_JSON = (
    '{"Containers":"N/A","CreatedAt":"2026-12-01 07:09:45 +0000 UTC","CreatedSince":"4 seconds ago","Digest":"\\u003cnone\\u003e","ID":"6d837ee301f1","Repository":"hist","SharedSize":"N/A","Size":"2.29MB","Tag":"1","UniqueSize":"N/A","VirtualSize":"2.29MB"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:56:00 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"5ce69a713924","Repository":"bb2","SharedSize":"N/A","Size":"1.98MB","Tag":"latest","UniqueSize":"N/A","VirtualSize":"1.982MB"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"ed6aa9374a70","Repository":"\\u003cnone\\u003e","SharedSize":"N/A","Size":"2B","Tag":"\\u003cnone\\u003e","UniqueSize":"N/A","VirtualSize":"2B"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"47a3820c822d","Repository":"busybox","SharedSize":"N/A","Size":"1.98MB","Tag":"1.0","UniqueSize":"N/A","VirtualSize":"1.982MB"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"47a3820c822d","Repository":"busybox","SharedSize":"N/A","Size":"1.98MB","Tag":"latest","UniqueSize":"N/A","VirtualSize":"1.982MB"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"47a3820c822d","Repository":"example.com/x/bb","SharedSize":"N/A","Size":"1.98MB","Tag":"v2","UniqueSize":"N/A","VirtualSize":"1.982MB"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"2ea181aa7a2a","Repository":"small","SharedSize":"N/A","Size":"2B","Tag":"one","UniqueSize":"N/A","VirtualSize":"2B"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"2ea181aa7a2a","Repository":"127.0.0.1:5317/small","SharedSize":"N/A","Size":"2B","Tag":"one","UniqueSize":"N/A","VirtualSize":"2B"}\n'
    '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"13 minutes ago","Digest":"\\u003cnone\\u003e","ID":"2ea181aa7a2a","Repository":"127.0.0.1:5317/small","SharedSize":"N/A","Size":"2B","Tag":"two","UniqueSize":"N/A","VirtualSize":"2B"}\n'
)
HISTORY_DEFAULT = (
    'IMAGE          CREATED          CREATED BY                                      SIZE      COMMENT\n'
    '6d837ee301f1   4 seconds ago    /bin/sh -c #(nop)  CMD ["sh" "-c" "echo 你好…   0B        \n'
    '995caab3c1f1   4 seconds ago    /bin/sh -c #(nop)  LABEL x=y                    0B        \n'
    '083f9d1b1dc4   4 seconds ago    /bin/sh -c echo "a very long command line th…   307kB     \n'
    '953a5ab12334   5 seconds ago    /bin/sh -c #(nop)  ENV A=1 B=2                  0B        \n'
    '5ce69a713924   13 minutes ago                                                   1.98MB    Imported from -\n'
)
HISTORY_NONHUMAN = (
    'IMAGE          CREATED AT             CREATED BY                                      SIZE      COMMENT\n'
    '6d837ee301f1   2026-12-01T07:09:45Z   /bin/sh -c #(nop)  CMD ["sh" "-c" "echo 你好…   0         \n'
    '995caab3c1f1   2026-12-01T07:09:45Z   /bin/sh -c #(nop)  LABEL x=y                    0         \n'
    '083f9d1b1dc4   2026-12-01T07:09:45Z   /bin/sh -c echo "a very long command line th…   307270    \n'
    '953a5ab12334   2026-12-01T07:09:44Z   /bin/sh -c #(nop)  ENV A=1 B=2                  0         \n'
    '5ce69a713924   2026-12-01T06:56:00Z                                                   1982280   Imported from -\n'
)
HISTORY_NOTRUNC = (
    'IMAGE                                                                     CREATED          CREATED BY                                                                                                                                          SIZE      COMMENT\n'
    'sha256:6d837ee301f1885c473552f3aeeaff9a7a9378ddce3e86b1c7bd04154eb193d9   4 seconds ago    /bin/sh -c #(nop)  CMD ["sh" "-c" "echo 你好世界你好世界你好世界你好世界你好世界你好世界"]                                                          0B        \n'
    'sha256:995caab3c1f11d8f981fdd0dba190753d9d34f8dd0f3cd3d8f6f67f6b876ae2c   4 seconds ago    /bin/sh -c #(nop)  LABEL x=y                                                                                                                        0B        \n'
    'sha256:083f9d1b1dc421e89d3aebc0ad2e5fcd54bead9a685686a1c14ea3ce5fe62e3a   4 seconds ago    /bin/sh -c echo "a very long command line that certainly exceeds forty five characters" > /f && dd if=/dev/zero of=/g bs=1k count=300 2>/dev/null   307kB     \n'
    'sha256:953a5ab12334d6fb3e25dd2bd2a56deac5c2db1a1d6c5c744ac0ef8eae4f6481   5 seconds ago    /bin/sh -c #(nop)  ENV A=1 B=2                                                                                                                      0B        \n'
    'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9   13 minutes ago                                                                                                                                                       1.98MB    Imported from -\n'
)
HISTORY_QUIET = (
    '6d837ee301f1\n'
    '995caab3c1f1\n'
    '083f9d1b1dc4\n'
    '953a5ab12334\n'
    '5ce69a713924\n'
)
DF_DEFAULT = (
    'TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n'
    'Images          5         3         4.272MB   2.29MB (53%)\n'
    'Containers      5         1         1.536MB   1.536MB (100%)\n'
    'Local Volumes   2         2         4B        0B (0%)\n'
    'Build Cache     0         0         0B        0B\n'
)
DF_JSON = (
    '{"Active":"3","Reclaimable":"2.29MB (53%)","Size":"4.272MB","TotalCount":"5","Type":"Images"}\n'
    '{"Active":"1","Reclaimable":"1.536MB (100%)","Size":"1.536MB","TotalCount":"5","Type":"Containers"}\n'
    '{"Active":"2","Reclaimable":"0B (0%)","Size":"4B","TotalCount":"2","Type":"Local Volumes"}\n'
    '{"Active":"0","Reclaimable":"0B","Size":"0B","TotalCount":"0","Type":"Build Cache"}\n'
)
DF_VERBOSE = (
    'Images space usage:\n'
    '\n'
    'REPOSITORY             TAG       IMAGE ID       CREATED          SIZE      SHARED SIZE   UNIQUE SIZE   CONTAINERS\n'
    'hist                   1         6d837ee301f1   4 seconds ago    2.29MB    1.982MB       307.3kB       0\n'
    'bb2                    latest    5ce69a713924   13 minutes ago   1.98MB    1.982MB       0B            2\n'
    '127.0.0.1:5317/small   one       2ea181aa7a2a   13 minutes ago   2B        2B            0B            1\n'
    '<none>                 <none>    ed6aa9374a70   13 minutes ago   2B        2B            0B            0\n'
    'busybox                1.0       47a3820c822d   13 minutes ago   1.98MB    0B            1.982MB       2\n'
    '\n'
    'Containers space usage:\n'
    '\n'
    'CONTAINER ID   IMAGE       COMMAND                  LOCAL VOLUMES   SIZE      CREATED          STATUS                      NAMES\n'
    '31ba57c7a87b   bb2         "sleep 3000"             1               0B        13 minutes ago   Up 13 minutes               c4\n'
    'd54b14034967   bb2         "sh -c \'echo abc > /…"   1               1.54MB    13 minutes ago   Exited (0) 13 minutes ago   c5\n'
    '65707662ad12   busybox     "sleep 3000"             0               0B        13 minutes ago   Created                     c3\n'
    'fb94e954cdd1   small:one   "/a"                     0               0B        13 minutes ago   Created                     c2\n'
    '331b138a99cb   busybox     "sh -c \'echo abc > /…"   1               0B        13 minutes ago   Created                     c1\n'
    '\n'
    'Local Volumes space usage:\n'
    '\n'
    'VOLUME NAME   LINKS     SIZE\n'
    'vol1          2         4B\n'
    'vol2          1         0B\n'
    '\n'
    'Build cache usage: 0B\n'
    '\n'
    'CACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED\n'
)


def _sorted_lines(text: str) -> list[str]:
    return sorted(text.splitlines())


# --------------------------------------------------------------------------- images


def test_images_default_table_matches_docker() -> None:
    assert views.images_output(IMAGES, now=NOW) == IMAGES_DEFAULT


def test_images_quiet_prints_one_id_per_row_like_docker() -> None:
    out = views.images_output(IMAGES, quiet=True, now=NOW)
    assert out == IMAGES_QUIET
    assert out.count("47a3820c822d") == 3  # docker repeats an id per tag


def test_images_digests_column_matches_docker() -> None:
    out = views.images_output(IMAGES, digests=True, now=NOW)
    assert out.splitlines()[0] == IMAGES_DIGESTS.splitlines()[0]
    assert _sorted_lines(out) == _sorted_lines(IMAGES_DIGESTS)


def test_images_no_trunc_keeps_full_ids() -> None:
    fmt = "table {{.ID}}\t{{.Repository}}\t{{.Tag}}\t{{.Size}}"
    out = views.images_output(IMAGES, fmt, no_trunc=True, now=NOW)
    assert _sorted_lines(out) == _sorted_lines(IMAGES_NOTRUNC)
    assert "sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1" in out


def test_images_json_lines_match_docker() -> None:
    out = views.images_output(IMAGES, "json", now=NOW)
    assert _sorted_lines(out) == _sorted_lines(IMAGES_JSON)
    first = json.loads(out.splitlines()[0])
    assert list(first) == sorted(first)  # docker's MarshalJSON sorts the keys
    assert '"Digest":"\\u003cnone\\u003e"' in out  # and escapes HTML characters


def test_images_format_resolution() -> None:
    assert views.images_format(None) == views.IMAGES_TABLE
    assert views.images_format("table") == views.IMAGES_TABLE
    assert views.images_format("", digests=True) == views.IMAGES_TABLE_DIGESTS
    assert views.images_format("table", quiet=True) == "{{.ID}}"
    assert views.images_format("raw", quiet=True) == "image_id: {{.ID}}"
    # --digests adds a DIGEST column to a custom table that lacks one
    assert views.images_format("table {{.ID}}", digests=True) == "table {{.ID}}\t{{.Digest}}"
    assert views.images_format("table {{.Digest}}", digests=True) == "table {{.Digest}}"
    # a custom format wins over -q
    assert views.images_format("{{.Tag}}", quiet=True) == "{{.Tag}}"


DIGEST_IMAGE = {
    "Id": "sha256:" + "ab" * 32,
    "Created": NOW - 3 * 86400,
    "Size": 4_260_000,
    "SharedSize": -1,
    "Containers": -1,
    "RepoTags": ["docker.io/library/app:1", "app:2", "registry.example.com:5000/team/app:1"],
    "RepoDigests": ["app@sha256:" + "11" * 32, "other/repo@sha256:" + "22" * 32],
}


def test_images_rows_pair_tags_with_digests_only_when_asked() -> None:
    rows = views.image_rows([DIGEST_IMAGE], now=NOW)
    got = [(r["Repository"], r["Tag"], r["Digest"]) for r in rows]
    assert got == [("app", "1", "<none>"), ("app", "2", "<none>"),
                   ("registry.example.com:5000/team/app", "1", "<none>"),
                   ("other/repo", "<none>", "")]
    rows = views.image_rows([DIGEST_IMAGE], digests=True, now=NOW)
    got = [(r["Repository"], r["Tag"], r["Digest"]) for r in rows]
    assert got == [("app", "1", "sha256:" + "11" * 32), ("app", "2", "sha256:" + "11" * 32),
                   ("registry.example.com:5000/team/app", "1", "<none>"),
                   ("other/repo", "<none>", "sha256:" + "22" * 32)]
    # a template that shows {{.Digest}} pairs them too (docker's needDigest)
    rows = views.image_rows([DIGEST_IMAGE], fmt="{{.Digest}}", now=NOW)
    assert rows[0]["Digest"] == "sha256:" + "11" * 32


def test_images_row_fields() -> None:
    row = views.image_rows([DIGEST_IMAGE], now=NOW)[0]
    assert row["ID"] == "abababababab"
    assert row["Size"] == "4.26MB"
    assert row["VirtualSize"] == "4.26MB"
    assert row["CreatedSince"] == "3 days ago"
    assert row["SharedSize"] == "N/A" and row["UniqueSize"] == "N/A"
    assert row["Containers"] == "N/A"
    img = dict(DIGEST_IMAGE, SharedSize=1_000_000, Containers=2)
    row = views.image_rows([img], now=NOW)[0]
    assert row["SharedSize"] == "1MB"
    assert row["UniqueSize"] == "3.26MB"
    assert row["Containers"] == "2"


def test_images_untagged_but_digested_image_shows_its_repository() -> None:
    img = dict(DIGEST_IMAGE, RepoTags=[], RepoDigests=["app@sha256:" + "33" * 32])
    out = views.images_output([img], now=NOW)
    assert out.splitlines()[1].split()[:2] == ["app", "<none>"]


def test_images_dangling_and_empty() -> None:
    img = dict(DIGEST_IMAGE, RepoTags=None, RepoDigests=None)
    out = views.images_output([img], digests=True, now=NOW)
    assert out.splitlines()[1].split()[:3] == ["<none>", "<none>", "<none>"]
    assert views.images_output([], now=NOW) == (
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n")


def test_images_template_error_prints_nothing() -> None:
    with pytest.raises(TemplateError) as err:
        views.images_output(IMAGES, "{{.Foo}}", now=NOW)
    assert str(err.value) == ('template parsing error: template: :1:2: executing "" at <.Foo>: '
                              "can't evaluate field Foo in type *formatter.imageContext")
    assert err.value.exit_code == 1


# --------------------------------------------------------------------------- history


def test_history_tables_match_docker() -> None:
    assert views.history_output(HISTORY, now=NOW) == HISTORY_DEFAULT
    assert views.history_output(HISTORY, human=False, now=NOW) == HISTORY_NONHUMAN
    assert views.history_output(HISTORY, no_trunc=True, now=NOW) == HISTORY_NOTRUNC
    assert views.history_output(HISTORY, quiet=True, now=NOW) == HISTORY_QUIET


def test_history_missing_ids_old_dates_and_tabs() -> None:
    item = {"Id": "<missing>", "Created": 0, "CreatedBy": "/bin/sh -c\tx", "Size": 1234,
            "Comment": "buildkit.dockerfile.v0"}
    row = views.history_row(item, now=NOW)
    assert row["ID"] == "<missing>"
    assert row["CreatedSince"] == "N/A"  # before 2000: docker does not say "56 years ago"
    assert row["CreatedAt"] == "1970-01-01T00:00:00Z"
    assert row["CreatedBy"] == "/bin/sh -c x"
    assert row["Size"] == "1.23kB"
    raw = views.history_row(item, human=False, now=NOW)
    assert raw["Size"] == "1234"
    assert raw["CreatedSince"] == raw["CreatedAt"]


def test_history_created_at_uses_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    row = views.history_row({"Id": "x", "Created": 1796108150}, human=False, now=NOW)
    assert row["CreatedAt"] == "2026-12-01T12:25:50+05:30"


def test_history_json_keys() -> None:
    line = views.history_output(HISTORY[:1], "json", now=NOW)
    assert sorted(json.loads(line)) == ["Comment", "CreatedAt", "CreatedBy", "CreatedSince",
                                        "ID", "Size"]


# --------------------------------------------------------------------------- system df


def test_system_df_matches_docker() -> None:
    assert views.system_df_output(DF, now=NOW) == DF_DEFAULT
    assert views.system_df_output(DF, "json", now=NOW) == DF_JSON


def test_system_df_verbose_matches_docker() -> None:
    assert views.system_df_output(DF, verbose=True, now=NOW) == DF_VERBOSE


def test_system_df_verbose_custom_format_is_one_template_without_newline() -> None:
    out = views.system_df_output(DF, "{{len .Images}} {{len .Volumes}}", verbose=True, now=NOW)
    assert out == f"{len(DF['Images'])} {len(DF['Volumes'])}"
    whole = json.loads(views.system_df_output(DF, "json", verbose=True, now=NOW))
    assert list(whole) == ["Images", "Containers", "Volumes", "BuildCache"]
    # untruncated ids outside a table, as docker
    assert whole["Images"][0]["ID"].startswith("sha256:")
    assert whole["BuildCache"] == []


def test_system_df_reclaimable_arithmetic() -> None:
    df = {
        "LayersSize": 3000,
        "Images": [
            {"Containers": 1, "Size": 1000, "SharedSize": 400},
            {"Containers": 0, "Size": 2000, "SharedSize": 0},
            {"Containers": 2, "Size": -1, "SharedSize": 0},  # unknown sizes are skipped
        ],
        "Containers": [
            {"State": "running", "SizeRw": 100},
            {"State": "paused", "SizeRw": 50},
            {"State": "exited", "SizeRw": 50},
        ],
        "Volumes": [
            {"UsageData": {"RefCount": 0, "Size": 30}},
            {"UsageData": {"RefCount": 2, "Size": 70}},
            {"UsageData": {"RefCount": 0, "Size": -1}},
        ],
        "BuildCache": [
            {"ID": "a", "Size": 500, "InUse": True, "Shared": False},
            {"ID": "b", "Size": 300, "InUse": False, "Shared": False},
            {"ID": "c", "Size": 999, "InUse": True, "Shared": True},
        ],
    }
    rows = {r["Type"]: r for r in views.system_df_rows(df)}
    assert rows["Images"]["Active"] == "2"
    assert rows["Images"]["Size"] == "3kB"
    assert rows["Images"]["Reclaimable"] == "2.4kB (80%)"
    assert rows["Containers"]["Active"] == "2"
    assert rows["Containers"]["Size"] == "200B"
    assert rows["Containers"]["Reclaimable"] == "50B (25%)"
    assert rows["Local Volumes"]["TotalCount"] == "3"
    assert rows["Local Volumes"]["Active"] == "1"
    assert rows["Local Volumes"]["Size"] == "100B"
    assert rows["Local Volumes"]["Reclaimable"] == "30B (30%)"
    assert rows["Build Cache"]["Active"] == "2"
    assert rows["Build Cache"]["Size"] == "800B"  # shared records are not counted
    assert rows["Build Cache"]["Reclaimable"] == "300B"  # never a percentage


def test_system_df_percent_truncates_toward_zero() -> None:
    # more in use than the layers (shared layers counted twice): Go's -2/3 is 0, not -1
    df = {"LayersSize": 300, "Images": [{"Containers": 1, "Size": 302, "SharedSize": 0}]}
    assert views.system_df_rows(df)[0]["Reclaimable"] == "-2B (0%)"


def test_system_df_empty() -> None:
    out = views.system_df_output({}, now=NOW)
    assert out == ("TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n"
                   "Images          0         0         0B        0B\n"
                   "Containers      0         0         0B        0B\n"
                   "Local Volumes   0         0         0B        0B\n"
                   "Build Cache     0         0         0B        0B\n")


def test_system_df_raw_format() -> None:
    out = views.system_df_output({}, "raw", now=NOW)
    assert out.startswith("type: Images\ntotal: 0\nactive: 0\nsize: 0B\nreclaimable: 0B\n\n")


def test_build_cache_rows_sorted_and_marked() -> None:
    records = [
        {"ID": "b" * 25, "Type": "regular", "Size": 2048, "InUse": True, "Shared": False,
         "CreatedAt": "2026-12-01T06:00:00.5Z", "LastUsedAt": "2026-12-01T07:00:00Z",
         "UsageCount": 3, "Parents": ["p" * 20]},
        {"ID": "a" * 25, "Type": "source.local", "Size": 10, "InUse": False, "Shared": True,
         "CreatedAt": "2026-12-01T06:00:00Z", "LastUsedAt": None, "UsageCount": 1},
    ]
    ordered = views._sort_build_cache(records)
    assert [r["ID"][0] for r in ordered] == ["a", "b"]  # never used first
    row = views.build_cache_row(records[0], now=NOW)
    assert row["ID"] == "b" * 12 + "*"
    assert row["Parent"] == "p" * 12
    assert row["Size"] == "2.05kB"
    assert row["CreatedAt"] == "2026-12-01 06:00:00.5 +0000 UTC"
    assert row["InUse"] == "true" and row["Shared"] == "false"
    assert row["UsageCount"] == "3"
    unused = views.build_cache_row(records[1], now=NOW)
    assert unused["LastUsedAt"] == "" and unused["LastUsedSince"] == ""


# --------------------------------------------------------------------------- containers


def test_displayable_ports_groups_ranges_and_mappings() -> None:
    ports = [
        {"PrivatePort": 80, "PublicPort": 8080, "IP": "0.0.0.0", "Type": "tcp"},
        {"PrivatePort": 9001, "Type": "tcp"},
        {"PrivatePort": 9000, "Type": "tcp"},
        {"PrivatePort": 9002, "Type": "tcp"},
        {"PrivatePort": 53, "Type": "udp"},
        {"PrivatePort": 443, "PublicPort": 443, "IP": "0.0.0.0", "Type": "tcp"},
        {"PrivatePort": 444, "PublicPort": 444, "IP": "0.0.0.0", "Type": "tcp"},
        {"PrivatePort": 80, "PublicPort": 8080, "IP": "::", "Type": "tcp"},
    ]
    assert views.displayable_ports(ports) == (
        "53/udp, 0.0.0.0:443-444->443-444/tcp, 9000-9002/tcp, "
        "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp")
    assert views.displayable_ports([]) == ""


def test_container_row_fields() -> None:
    c = {
        "Id": "f" * 64, "Names": ["/web", "/other/alias"], "Image": "docker.io/library/nginx:1.25@sha256:" + "1" * 64,
        "ImageID": "sha256:" + "2" * 64, "Command": "nginx -g 'daemon off;' --long-option",
        "Created": NOW - 7200, "State": "running", "Status": "Up 2 hours",
        "Labels": {"b": "2", "a": "1"}, "SizeRw": 1500, "SizeRootFs": 2_000_000,
        "Mounts": [{"Name": "", "Source": "/very/long/host/path/here", "Driver": ""},
                   {"Name": "data", "Driver": "local"}],
        "NetworkSettings": {"Networks": {"bridge": {}, "app": {}}},
    }
    row = views.container_row(c, now=NOW)
    assert row["ID"] == "f" * 12
    assert row["Names"] == "web"
    assert row["Image"] == "nginx:1.25"
    assert row["Command"] == '"nginx -g \'daemon of…"'
    assert row["RunningFor"] == "2 hours ago"
    assert row["Size"] == "1.5kB (virtual 2MB)"
    assert row["Labels"] == "a=1,b=2"
    assert row["Label"]("b") == "2"
    assert row["Mounts"] == "/very/long/hos…,data"
    assert row["LocalVolumes"] == "1"
    assert row["Networks"] == "app,bridge"
    full = views.container_row(c, trunc=False, now=NOW)
    assert full["Names"] == "web,other/alias"
    assert full["Image"] == c["Image"]
    assert full["Command"] == '"nginx -g \'daemon off;\' --long-option"'
    # an image given by id shows the short id
    by_id = views.container_row(dict(c, Image="sha256:" + "2" * 64), now=NOW)
    assert by_id["Image"] == "2" * 12
    assert views.container_row(dict(c, Image=""), now=NOW)["Image"] == "<no image>"


def test_container_label_method_in_templates() -> None:
    from ketch.cli.formatting import render

    row = views.container_row({"Id": "x", "Labels": {"com.example.k": "v"}}, now=NOW)
    assert render('{{.Label "com.example.k"}}|{{.Label "nope"}}', [row],
                  views.CONTAINER_HEADERS) == "v|\n"
    # methods with arguments are not part of {{json .}}
    assert "Label\"" not in render("json", [row], views.CONTAINER_HEADERS)


def test_container_format_resolution() -> None:
    assert views.container_format(None) == views.CONTAINERS_TABLE
    assert views.container_format("table", size=True).endswith("\t{{.Size}}")
    assert views.container_format("{{.Names}}", quiet=True) == "{{.ID}}"


def test_volume_row() -> None:
    row = views.volume_row({"Name": "v", "Driver": "local", "Labels": {"z": "1", "a": "2"},
                            "UsageData": {"RefCount": 0, "Size": 4096}})
    assert row["Links"] == "0" and row["Size"] == "4.096kB"
    assert row["Labels"] == "a=2,z=1"
    assert row["Status"] == row["Group"] == row["Availability"] == "N/A"
    bare = views.volume_row({"Name": "v", "Driver": "local", "Labels": None})
    assert bare["Links"] == "N/A" and bare["Size"] == "N/A" and bare["Labels"] == ""


# Recorded: GET /containers/json?all=1&size=1 and /volumes (trimmed), docker ps / volume ls.
NOW2 = 1796109188
CONTAINERS = [{'Command': 'sh -c \'echo "tab\there"\'',
  'Created': 1796109176,
  'Id': '0a853b12118dcbce883cf5d29d022d684eddb93d212f48f9f02cf3a518dba62d',
  'Image': 'bb2',
  'ImageID': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
  'Labels': {'a': '1', 'b': '2', 'com.example.x': 'y'},
  'Mounts': [],
  'Names': ['/labelled'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 1982280,
  'State': 'created',
  'Status': 'Created'},
 {'Command': 'sleep 3000',
  'Created': 1796108160,
  'Id': '31ba57c7a87b47d93af0264f148a058f443ea3630a32b901ccce9ae082f1b0c3',
  'Image': 'bb2',
  'ImageID': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
  'Labels': {},
  'Mounts': [{'Driver': 'local',
              'Name': 'vol2',
              'Source': '/tmp/fmtref/root/volumes/vol2/_data',
              'Type': 'volume'}],
  'Names': ['/c4'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 1982280,
  'State': 'running',
  'Status': 'Up 17 minutes'},
 {'Command': "sh -c 'echo abc > /data/f; dd if=/dev/zero of=/x bs=1k count=1500 2>/dev/null'",
  'Created': 1796108160,
  'Id': 'd54b140349672295848dcbbe4651127dba6c4ffd9b3ac38c937f32e81808f58d',
  'Image': 'bb2',
  'ImageID': 'sha256:5ce69a71392484d2e0629cbd37352593d421f7fbf11cb8464f75f9dcba113fa9',
  'Labels': {},
  'Mounts': [{'Driver': 'local',
              'Name': 'vol1',
              'Source': '/tmp/fmtref/root/volumes/vol1/_data',
              'Type': 'volume'}],
  'Names': ['/c5'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 3518280,
  'SizeRw': 1536000,
  'State': 'exited',
  'Status': 'Exited (0) 17 minutes ago'},
 {'Command': 'sleep 3000',
  'Created': 1796108156,
  'Id': '65707662ad12f7da81d92652da3a869b94b876554bc6b96f9b066622595ad207',
  'Image': 'busybox',
  'ImageID': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
  'Labels': {},
  'Mounts': [],
  'Names': ['/c3'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 1982259,
  'State': 'created',
  'Status': 'Created'},
 {'Command': '/a',
  'Created': 1796108156,
  'Id': 'fb94e954cdd16c447b64493178693eeb3001837f749b4f77afd9a8ea192a1492',
  'Image': 'small:one',
  'ImageID': 'sha256:2ea181aa7a2afac1b5484d18f18fa28233f24eec0ae0808837443b3bbd2f4704',
  'Labels': {},
  'Mounts': [],
  'Names': ['/c2'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 2,
  'State': 'created',
  'Status': 'Created'},
 {'Command': "sh -c 'echo abc > /data/f; echo 123456 > /x'",
  'Created': 1796108156,
  'Id': '331b138a99cbc6658e97447c09f99094507d63f7c42e29d63cc2008b46957a26',
  'Image': 'busybox',
  'ImageID': 'sha256:47a3820c822d88f1d036ca00a1b07535975fe58204c62ceee157dc59df574fa1',
  'Labels': {},
  'Mounts': [{'Driver': 'local',
              'Name': 'vol1',
              'Source': '/tmp/fmtref/root/volumes/vol1/_data',
              'Type': 'volume'}],
  'Names': ['/c1'],
  'NetworkSettings': {'Networks': {'none': {}}},
  'Ports': [],
  'SizeRootFs': 1982259,
  'State': 'created',
  'Status': 'Created'}]
VOLUME_LIST = [{'Driver': 'local',
  'Labels': None,
  'Mountpoint': '/tmp/fmtref/root/volumes/vol1/_data',
  'Name': 'vol1',
  'Scope': 'local'},
 {'Driver': 'local',
  'Labels': None,
  'Mountpoint': '/tmp/fmtref/root/volumes/vol2/_data',
  'Name': 'vol2',
  'Scope': 'local'},
 {'Driver': 'local',
  'Labels': None,
  'Mountpoint': '/tmp/fmtref/root/volumes/vol10/_data',
  'Name': 'vol10',
  'Scope': 'local'},
 {'Driver': 'local',
  'Labels': None,
  'Mountpoint': '/tmp/fmtref/root/volumes/vol01/_data',
  'Name': 'vol01',
  'Scope': 'local'},
 {'Driver': 'local',
  'Labels': None,
  'Mountpoint': '/tmp/fmtref/root/volumes/Vol3/_data',
  'Name': 'Vol3',
  'Scope': 'local'}]
PS = (
    'CONTAINER ID   IMAGE       COMMAND                    CREATED          STATUS                      PORTS     NAMES\n'
    '0a853b12118d   bb2         "sh -c \'echo \\"tab\\the…"   12 seconds ago   Created                               labelled\n'
    '31ba57c7a87b   bb2         "sleep 3000"               17 minutes ago   Up 17 minutes                         c4\n'
    'd54b14034967   bb2         "sh -c \'echo abc > /…"     17 minutes ago   Exited (0) 17 minutes ago             c5\n'
    '65707662ad12   busybox     "sleep 3000"               17 minutes ago   Created                               c3\n'
    'fb94e954cdd1   small:one   "/a"                       17 minutes ago   Created                               c2\n'
    '331b138a99cb   busybox     "sh -c \'echo abc > /…"     17 minutes ago   Created                               c1\n'
)
PS_SIZE = (
    'CONTAINER ID   IMAGE       COMMAND                    CREATED          STATUS                      PORTS     NAMES      SIZE\n'
    '0a853b12118d   bb2         "sh -c \'echo \\"tab\\the…"   12 seconds ago   Created                               labelled   0B (virtual 1.98MB)\n'
    '31ba57c7a87b   bb2         "sleep 3000"               17 minutes ago   Up 17 minutes                         c4         0B (virtual 1.98MB)\n'
    'd54b14034967   bb2         "sh -c \'echo abc > /…"     17 minutes ago   Exited (0) 17 minutes ago             c5         1.54MB (virtual 3.52MB)\n'
    '65707662ad12   busybox     "sleep 3000"               17 minutes ago   Created                               c3         0B (virtual 1.98MB)\n'
    'fb94e954cdd1   small:one   "/a"                       17 minutes ago   Created                               c2         0B (virtual 2B)\n'
    '331b138a99cb   busybox     "sh -c \'echo abc > /…"     17 minutes ago   Created                               c1         0B (virtual 1.98MB)\n'
)
PS_NOTRUNC = (
    'CONTAINER ID                                                       IMAGE       COMMAND                                                                            CREATED          STATUS                      PORTS     NAMES\n'
    '0a853b12118dcbce883cf5d29d022d684eddb93d212f48f9f02cf3a518dba62d   bb2         "sh -c \'echo \\"tab\\there\\"\'"                                                       12 seconds ago   Created                               labelled\n'
    '31ba57c7a87b47d93af0264f148a058f443ea3630a32b901ccce9ae082f1b0c3   bb2         "sleep 3000"                                                                       17 minutes ago   Up 17 minutes                         c4\n'
    'd54b140349672295848dcbbe4651127dba6c4ffd9b3ac38c937f32e81808f58d   bb2         "sh -c \'echo abc > /data/f; dd if=/dev/zero of=/x bs=1k count=1500 2>/dev/null\'"   17 minutes ago   Exited (0) 17 minutes ago             c5\n'
    '65707662ad12f7da81d92652da3a869b94b876554bc6b96f9b066622595ad207   busybox     "sleep 3000"                                                                       17 minutes ago   Created                               c3\n'
    'fb94e954cdd16c447b64493178693eeb3001837f749b4f77afd9a8ea192a1492   small:one   "/a"                                                                               17 minutes ago   Created                               c2\n'
    '331b138a99cbc6658e97447c09f99094507d63f7c42e29d63cc2008b46957a26   busybox     "sh -c \'echo abc > /data/f; echo 123456 > /x\'"                                     17 minutes ago   Created                               c1\n'
)
PS_JSON = (
    '{"Command":"\\"sh -c \'echo \\\\\\"tab\\\\the…\\"","CreatedAt":"2026-12-01 07:12:56 +0000 UTC","ID":"0a853b12118d","Image":"bb2","Labels":"a=1,b=2,com.example.x=y","LocalVolumes":"0","Mounts":"","Names":"labelled","Networks":"none","Platform":null,"Ports":"","RunningFor":"12 seconds ago","Size":"0B","State":"created","Status":"Created"}\n'
    '{"Command":"\\"sleep 3000\\"","CreatedAt":"2026-12-01 06:56:00 +0000 UTC","ID":"31ba57c7a87b","Image":"bb2","Labels":"","LocalVolumes":"1","Mounts":"vol2","Names":"c4","Networks":"none","Platform":null,"Ports":"","RunningFor":"17 minutes ago","Size":"0B","State":"running","Status":"Up 17 minutes"}\n'
    '{"Command":"\\"sh -c \'echo abc \\u003e /…\\"","CreatedAt":"2026-12-01 06:56:00 +0000 UTC","ID":"d54b14034967","Image":"bb2","Labels":"","LocalVolumes":"1","Mounts":"vol1","Names":"c5","Networks":"none","Platform":null,"Ports":"","RunningFor":"17 minutes ago","Size":"0B","State":"exited","Status":"Exited (0) 17 minutes ago"}\n'
    '{"Command":"\\"sleep 3000\\"","CreatedAt":"2026-12-01 06:55:56 +0000 UTC","ID":"65707662ad12","Image":"busybox","Labels":"","LocalVolumes":"0","Mounts":"","Names":"c3","Networks":"none","Platform":null,"Ports":"","RunningFor":"17 minutes ago","Size":"0B","State":"created","Status":"Created"}\n'
    '{"Command":"\\"/a\\"","CreatedAt":"2026-12-01 06:55:56 +0000 UTC","ID":"fb94e954cdd1","Image":"small:one","Labels":"","LocalVolumes":"0","Mounts":"","Names":"c2","Networks":"none","Platform":null,"Ports":"","RunningFor":"17 minutes ago","Size":"0B","State":"created","Status":"Created"}\n'
    '{"Command":"\\"sh -c \'echo abc \\u003e /…\\"","CreatedAt":"2026-12-01 06:55:56 +0000 UTC","ID":"331b138a99cb","Image":"busybox","Labels":"","LocalVolumes":"1","Mounts":"vol1","Names":"c1","Networks":"none","Platform":null,"Ports":"","RunningFor":"17 minutes ago","Size":"0B","State":"created","Status":"Created"}\n'
)
PS_CUSTOM = (
    'NAMES      LABELS                    x         STATE     MOUNTS    LOCAL VOLUMES   NETWORKS\n'
    'labelled   a=1,b=2,com.example.x=y   y         created             0               none\n'
    'c4                                             running   vol2      1               none\n'
    'c5                                             exited    vol1      1               none\n'
    'c3                                             created             0               none\n'
    'c2                                             created             0               none\n'
    'c1                                             created   vol1      1               none\n'
)
VOLUME_LS = (
    'DRIVER    VOLUME NAME\n'
    'local     Vol3\n'
    'local     vol1\n'
    'local     vol01\n'
    'local     vol2\n'
    'local     vol10\n'
)
VOLUMES_QUIET = (
    'Vol3\n'
    'vol1\n'
    'vol01\n'
    'vol2\n'
    'vol10\n'
)
VOLUMES_JSON = (
    '{"Availability":"N/A","Driver":"local","Group":"N/A","Labels":"","Links":"N/A","Mountpoint":"/tmp/fmtref/root/volumes/Vol3/_data","Name":"Vol3","Scope":"local","Size":"N/A","Status":"N/A"}\n'
    '{"Availability":"N/A","Driver":"local","Group":"N/A","Labels":"","Links":"N/A","Mountpoint":"/tmp/fmtref/root/volumes/vol1/_data","Name":"vol1","Scope":"local","Size":"N/A","Status":"N/A"}\n'
    '{"Availability":"N/A","Driver":"local","Group":"N/A","Labels":"","Links":"N/A","Mountpoint":"/tmp/fmtref/root/volumes/vol01/_data","Name":"vol01","Scope":"local","Size":"N/A","Status":"N/A"}\n'
    '{"Availability":"N/A","Driver":"local","Group":"N/A","Labels":"","Links":"N/A","Mountpoint":"/tmp/fmtref/root/volumes/vol2/_data","Name":"vol2","Scope":"local","Size":"N/A","Status":"N/A"}\n'
    '{"Availability":"N/A","Driver":"local","Group":"N/A","Labels":"","Links":"N/A","Mountpoint":"/tmp/fmtref/root/volumes/vol10/_data","Name":"vol10","Scope":"local","Size":"N/A","Status":"N/A"}\n'
)

PS_CUSTOM_FORMAT = ('table {{.Names}}\t{{.Labels}}\t{{.Label "com.example.x"}}\t{{.State}}\t'
                    "{{.Mounts}}\t{{.LocalVolumes}}\t{{.Networks}}")


def test_ps_tables_match_docker() -> None:
    assert views.containers_output(CONTAINERS, now=NOW2) == PS
    assert views.containers_output(CONTAINERS, size=True, now=NOW2) == PS_SIZE
    assert views.containers_output(CONTAINERS, no_trunc=True, now=NOW2) == PS_NOTRUNC
    # the header of {{.Label "com.example.x"}} is the key's last part, as docker's
    assert views.containers_output(CONTAINERS, PS_CUSTOM_FORMAT, now=NOW2) == PS_CUSTOM


def test_ps_json_matches_docker() -> None:
    # docker ps --format json does not ask for sizes
    unsized = [{k: v for k, v in c.items() if k not in ("SizeRw", "SizeRootFs")}
               for c in CONTAINERS]
    assert views.containers_output(unsized, "json", now=NOW2) == PS_JSON


def test_ps_needs_size() -> None:
    assert not views.ps_needs_size(None)
    assert not views.ps_needs_size("json")  # the raw text "json" names no field
    assert not views.ps_needs_size("table {{.ID}}\t{{.Names}}")
    assert views.ps_needs_size("table {{.ID}}\t{{.Size}}")
    assert views.ps_needs_size("{{if .Size}}x{{end}}")
    assert views.ps_needs_size("{{json .}}")


def test_volume_ls_matches_docker() -> None:
    assert views.volumes_output(VOLUME_LIST) == VOLUME_LS
    assert views.volumes_output(VOLUME_LIST, quiet=True) == VOLUMES_QUIET
    assert views.volumes_output(VOLUME_LIST, "json") == VOLUMES_JSON


def test_natural_sort_order() -> None:
    names = ["vol10", "vol2", "vol01", "vol1", "Vol3", "a", "1", "vol001", "vol1x"]
    # equal numbers: the one with fewer leading zeros wins at once, whatever follows
    assert sorted(names, key=views.natural_key) == [
        "1", "Vol3", "a", "vol1", "vol1x", "vol01", "vol001", "vol2", "vol10"]


# Recorded: GET /networks (trimmed) and docker network ls.
NETWORK_LIST = [{'Created': '2026-12-01T06:55:44.214328424Z',
  'Driver': 'null',
  'EnableIPv6': False,
  'Id': '741390598a978cff8baf57ae1d0e6b2f99816a91efe19c1354cc4fc9d811f317',
  'Internal': False,
  'Labels': {},
  'Name': 'none',
  'Scope': 'local'},
 {'Created': '2026-12-01T06:55:44.215471723Z',
  'Driver': 'host',
  'EnableIPv6': False,
  'Id': 'e07022e52cfc2276b65dcd28f69bfad9edf2d3ab01c01f5ff29cd65af4601592',
  'Internal': False,
  'Labels': {},
  'Name': 'host',
  'Scope': 'local'},
 {'Created': '2026-12-01T07:15:09.036876809Z',
  'Driver': 'bridge',
  'EnableIPv6': False,
  'Id': '7d1030451677357011a949b21839bab7451895cd44f13d9d3c4be3338198a222',
  'Internal': False,
  'Labels': {},
  'Name': 'net2',
  'Scope': 'local'}]
NETWORK_LS = (
    'NETWORK ID     NAME      DRIVER    SCOPE\n'
    'e07022e52cfc   host      host      local\n'
    '7d1030451677   net2      bridge    local\n'
    '741390598a97   none      null      local\n'
)
NETWORK_LS_FULL = (
    'NETWORK ID                                                         NAME      IPV4      IPV6      INTERNAL   LABELS    CREATED AT\n'
    'e07022e52cfc2276b65dcd28f69bfad9edf2d3ab01c01f5ff29cd65af4601592   host      false     false     false                2026-12-01 06:55:44.215471723 +0000 UTC\n'
    '7d1030451677357011a949b21839bab7451895cd44f13d9d3c4be3338198a222   net2      false     false     false                2026-12-01 07:15:09.036876809 +0000 UTC\n'
    '741390598a978cff8baf57ae1d0e6b2f99816a91efe19c1354cc4fc9d811f317   none      false     false     false                2026-12-01 06:55:44.214328424 +0000 UTC\n'
)
NETWORK_LS_JSON = (
    '{"CreatedAt":"2026-12-01 06:55:44.215471723 +0000 UTC","Driver":"host","ID":"e07022e52cfc","IPv4":"false","IPv6":"false","Internal":"false","Labels":"","Name":"host","Scope":"local"}\n'
    '{"CreatedAt":"2026-12-01 07:15:09.036876809 +0000 UTC","Driver":"bridge","ID":"7d1030451677","IPv4":"false","IPv6":"false","Internal":"false","Labels":"","Name":"net2","Scope":"local"}\n'
    '{"CreatedAt":"2026-12-01 06:55:44.214328424 +0000 UTC","Driver":"null","ID":"741390598a97","IPv4":"false","IPv6":"false","Internal":"false","Labels":"","Name":"none","Scope":"local"}\n'
)
NETWORK_LS_QUIET = (
    'e07022e52cfc\n'
    '7d1030451677\n'
    '741390598a97\n'
)

NETWORK_FULL_FORMAT = ("table {{.ID}}\t{{.Name}}\t{{.IPv4}}\t{{.IPv6}}\t{{.Internal}}\t"
                       "{{.Labels}}\t{{.CreatedAt}}")


def test_network_ls_matches_docker() -> None:
    from ketch.cli import network_cmds

    assert network_cmds.networks_output(NETWORK_LIST) == NETWORK_LS
    assert network_cmds.networks_output(NETWORK_LIST, quiet=True) == NETWORK_LS_QUIET
    assert network_cmds.networks_output(NETWORK_LIST, "json") == NETWORK_LS_JSON
    assert network_cmds.networks_output(NETWORK_LIST, NETWORK_FULL_FORMAT,
                                        no_trunc=True) == NETWORK_LS_FULL


def test_network_row_labels() -> None:
    from ketch.cli import network_cmds

    row = network_cmds.network_row({"Id": "n" * 64, "Name": "x", "Labels": {"b": "1", "a": "2"},
                             "Internal": True, "EnableIPv6": True})
    assert row["ID"] == "n" * 12
    assert row["Labels"] == "a=2,b=1" and row["Label"]("b") == "1"
    assert (row["Internal"], row["IPv6"], row["IPv4"]) == ("true", "true", "false")
    assert row["CreatedAt"] == "0001-01-01 00:00:00 +0000 UTC"
