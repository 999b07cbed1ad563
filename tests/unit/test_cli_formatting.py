"""ketch.cli.formatting: Go templates, docker's table/json dispatch, tabwriter, units.

DOCKER_CASES were recorded by running ``docker images --format T small:one``
with the docker CLI 28.2.2 against dockerd 20.10: the row below is what that
image's row held (``{{json .}}``), and each expected text is what docker
printed, or "ERR:" and what it printed on stderr (exit status 1).
"""

from __future__ import annotations

import json
import time

import pytest

from ketch.cli import formatting as F
from ketch.cli.formatting import MISSING, Struct, TemplateError
from ketch.errors import InvalidArgument

HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
    "Containers": "CONTAINERS", "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
}

ROW = {'Containers': 'N/A', 'CreatedAt': '2026-12-01 06:55:50 +0000 UTC', 'CreatedSince': '12 minutes ago', 'Digest': '<none>', 'ID': '2ea181aa7a2a', 'Repository': 'small', 'SharedSize': 'N/A', 'Size': '2B', 'Tag': 'one', 'UniqueSize': 'N/A', 'VirtualSize': '2B'}

DOCKER_CASES = [
    ('{{foo}}',
     'ERR:template parsing error: template: :1: function "foo" not defined\n'),
    ('{{.Foo}}',
     'ERR:template parsing error: template: :1:2: executing "" at <.Foo>: can\'t evaluate field Foo in type *formatter.imageContext\n'),
    ('{{json .}}',
     '{"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"12 minutes ago","Digest":"\\u003cnone\\u003e","ID":"2ea181aa7a2a","Repository":"small","SharedSize":"N/A","Size":"2B","Tag":"one","UniqueSize":"N/A","VirtualSize":"2B"}\n'),
    ('{{if}}',
     'ERR:template parsing error: template: :1: missing value for if\n'),
    ('{{range .RepoTags}}',
     'ERR:template parsing error: template: :1: unexpected EOF\n'),
    ('{{end}}',
     'ERR:template parsing error: template: :1: unexpected {{end}}\n'),
    ('{{.ID',
     'ERR:template parsing error: template: :1: unclosed action\n'),
    ('{{index .Labels "x"}}',
     'ERR:template parsing error: template: :1:8: executing "" at <.Labels>: can\'t evaluate field Labels in type *formatter.imageContext\n'),
    ('{{"a" | printf "%s %d" 3}}',
     '%!s(int=3) %!d(string=a)\n'),
    ('{{$x}}',
     'ERR:template parsing error: template: :1: undefined variable "$x"\n'),
    ('{{template "a"}}',
     'ERR:template parsing error: template: :1:11: executing "" at <{{template "a"}}>: template "a" not defined\n'),
    ('{{len 3}}',
     'ERR:template parsing error: template: :1:2: executing "" at <len 3>: error calling len: len of type int\n'),
    ('{{truncate .ID 5}}',
     '2ea18\n'),
    ('{{eq .ID 3}}',
     'ERR:template parsing error: template: :1:2: executing "" at <eq .ID 3>: error calling eq: incompatible types for comparison\n'),
    ('{{join .Containers ","}}',
     'ERR:template parsing error: template: :1:7: executing "" at <.Containers>: wrong type for value; expected []string; got string\n'),
    ('{{.ID.Foo}}',
     'ERR:template parsing error: template: :1:5: executing "" at <.ID.Foo>: can\'t evaluate field Foo in type string\n'),
    ('{{pad .Tag 2 3}}|',
     '  one   |\n'),
    ('{{len (printf "%s" "aaaaaaaaaaaaaaaaaaaaaaaaaa") .ID}}',
     'ERR:template parsing error: template: :1:2: executing "" at <len>: wrong number of args for len: want 1 got 2\n'),
    ('x\n{{.Tag}}{{.Nope}}',
     'ERR:template parsing error: template: :2:10: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.imageContext\n'),
    ('{{.Tag | foo}}',
     'ERR:template parsing error: template: :1: function "foo" not defined\n'),
    ('{{range $i, $e := split "a,b" ","}}{{$i}}={{$e}};{{end}}',
     '0=a;1=b;\n'),
    ('{{- .Tag -}} x {{- "y"}}',
     'onexy\n'),
    ('{{println .Tag "a" 3}}',
     'one a 3\n\n'),
    ('{{print 1 2 "a" "b" 3}}',
     '1 2ab3\n'),
    ('{{printf "%q|%v|%5s|%-5s|%x|%t|%05d|%.2f" .Tag .Tag .Tag .Tag .Tag true 42 3.14159}}',
     '"one"|one|  one|one  |6f6e65|true|00042|3.14\n'),
    ('{{json (split "a<b,c" ",")}}',
     '["a<b","c"]\n'),
    ('{{title "hello wORLD foo-bar"}}',
     'Hello WORLD Foo-Bar\n'),
    ('{{index (split "a,b" ",") 5}}',
     'ERR:template parsing error: template: :1:2: executing "" at <index (split "a,b" ",") 5>: error calling index: index out of range: 5\n'),
    ('{{lt 1 2}} {{gt "b" "a"}} {{eq 1 1 2}} {{ne "a" "b"}} {{le 2 2}}',
     'true true true true true\n'),
    ('{{and 1 0 2}} {{or 0 "" "x"}} {{not 0}} {{and}}',
     'ERR:template parsing error: template: :1:42: executing "" at <and>: wrong number of args for and: want at least 1 got 0\n'),
    ('{{slice "abcdef" 1 3}}',
     'bc\n'),
    ('{{1e6}} {{1.5}} {{0x10}} {{-3}} {{true}} {{nil}}',
     'ERR:template parsing error: template: :1:43: executing "" at <nil>: nil is not a command\n'),
    ('{{.Tag.X}}',
     'ERR:template parsing error: template: :1:6: executing "" at <.Tag.X>: can\'t evaluate field X in type string\n'),
    ('{{if eq .Tag "one"}}A{{else if eq .Tag "two"}}B{{else}}C{{end}}',
     'A\n'),
    ('{{with $x := .Tag}}{{$x}}{{end}}',
     'one\n'),
    ('{{range split "a,b,c" ","}}{{if eq . "b"}}{{break}}{{end}}{{.}}{{end}}',
     'a\n'),
    ('{{1e6}} {{1.5}} {{0x10}} {{-3}} {{true}} {{1e21}} {{123456789.0}} {{0.00001}}',
     '1e+06 1.5 16 -3 true 1e+21 1.23456789e+08 1e-05\n'),
    ('{{and 1 0 2}} {{or 0 "" "x"}} {{not 0}}',
     '0 x true\n'),
    ('{{printf "%s %d %v" 1}}',
     '%!s(int=1) %!d(MISSING) %!v(MISSING)\n'),
    ('{{printf "%d" "x" 3}}',
     '%!d(string=x)%!(EXTRA int=3)\n'),
    ('{{printf "%5.1f|%e|%g|%X|%o|%c|%U|%8.3s|%+d|%x" 3.14159 1234.5 0.000012 255 8 65 65 "abcdef" 5 -255}}',
     '  3.1|1.234500e+03|1.2e-05|FF|10|A|U+0041|     abc|+5|-ff\n'),
    ('{{len "héllo"}} {{truncate "héllo" 2}}',
     '6 h�\n'),
    ('{{upper "ß"}} {{split "" ","}} {{len (split "" ",")}}',
     'ß [] 1\n'),
    ('{{index "abc" 1}}',
     '98\n'),
    ('{{"\\u00e9\\t\\x41"}}',
     'é\tA\n'),
    ('{{`raw\\n`}}',
     'raw\n\n'),
    ("{{'a'}}",
     '97\n'),
    ('{{eq .Tag "one" "two"}} {{eq 1 1.0}}',
     'ERR:template parsing error: template: :1:26: executing "" at <eq 1 1.0>: error calling eq: incompatible types for comparison\n'),
    ('{{lt 1 2.5}}',
     'ERR:template parsing error: template: :1:2: executing "" at <lt 1 2.5>: error calling lt: incompatible types for comparison\n'),
    ('{{json 1.5}} {{json "é\\u2028<"}}',
     '1.5 "é\\u2028<"\n'),
    ('{{range 3}}{{.}}{{end}}',
     '012\n'),
    ('{{$x := 1}}{{$x = 2}}{{$x}}',
     '2\n'),
    ('{{/* c */}}a{{- /* c */ -}} b',
     'ab\n'),
    ('{{(1)}}',
     '1\n'),
    ('table {{.ID}}\\t{{.Foo}}\\t{{pad .Tag 1 1}}|{{index .Labels "x"}}\\t{{.Size}}',
     'ERR:template parsing error: template: :1:10: executing "" at <.Foo>: can\'t evaluate field Foo in type *formatter.imageContext\n'),
    ('table {{.ID}}\\t{{json .}}\\t{{lower .Tag}}',
     'IMAGE ID       \n2ea181aa7a2a   {"Containers":"N/A","CreatedAt":"2026-12-01 06:55:50 +0000 UTC","CreatedSince":"12 minutes ago","Digest":"\\u003cnone\\u003e","ID":"2ea181aa7a2a","Repository":"small","SharedSize":"N/A","Size":"2B","Tag":"one","UniqueSize":"N/A","VirtualSize":"2B"}   one\n'),
    ('table  {{.ID}}  ',
     'IMAGE ID\n2ea181aa7a2a\n'),
    ('{{.ID}}\\t{{.Tag}}\\n',
     '2ea181aa7a2a\tone\n\n'),
    ('table {{.ID}}\\nX{{.Tag}}',
     'IMAGE ID\nXTAG\n2ea181aa7a2a\nXone\n'),
    ('table {{upper .Tag}}\\t{{json .Tag}}\\t{{truncate .Repository 2}}\\t{{split .Tag "n"}}',
     'TAG       TAG       REPOSITORY   TAG\nONE       "one"     sm           [o e]\n'),
    ('{{.Tag | printf "%s-%s" "x"}}',
     'x-one\n'),
    ('{{if .Tag}}{{else}}{{end}}{{with .Nope}}{{end}}',
     'ERR:template parsing error: template: :1:33: executing "" at <.Nope>: can\'t evaluate field Nope in type *formatter.imageContext\n'),
    ('{{.Tag}} {{- /* x */}} {{.ID}}',
     'one 2ea181aa7a2a\n'),
    ('{{ .Tag }}{{else}}',
     'ERR:template parsing error: template: :1: unexpected {{else}}\n'),
    ('{{if .Tag}}{{.ID}}',
     'ERR:template parsing error: template: :1: unexpected EOF\n'),
    ('{{range $a, $b, $c := .}}{{end}}',
     'ERR:template parsing error: template: :1: too many declarations in range\n'),
    ('{{.Tag 1}}',
     'ERR:template parsing error: template: :1:2: executing "" at <.Tag>: wrong number of args for Tag: want 0 got 1\n'),
    ('{{"x" | .Tag}}',
     'ERR:template parsing error: template: :1:8: executing "" at <.Tag>: wrong number of args for Tag: want 0 got 1\n'),
    ('{{printf "%!" }}|{{printf "%"}}|{{printf "%z" 1}}|{{printf "%d %s" true nil}}',
     '%!!(MISSING)|%!(NOVERB)|%!z(int=1)|%!d(bool=true) %!s(<nil>)\n'),
    ('{{ .Tag | len | printf "%d" }}',
     '3\n'),
    ('{{html "<a href=\'x\'>&\\"</a>"}} {{urlquery "a b&c/d"}}',
     '&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt; a+b%26c%2Fd\n'),
    ('{{print nil}}',
     '<nil>\n'),
    ('{{index . "ID"}}',
     'ERR:template parsing error: template: :1:2: executing "" at <index . "ID">: error calling index: can\'t index item of type formatter.imageContext\n'),
    ('{{json .Tag}}{{"\\n"}}{{json .}}',
     'ERR:template parsing error: template: :1: unterminated quoted string\n'),
    ('{{printf "%6.2f|%-8d|%08.3f|%+.1e|%x|%X" 3.14159 42 3.14159 12345.678 "hi" 255}}',
     '  3.14|42      |0003.142|+1.2e+04|6869|FF\n'),
    ('{{printf "%q %v %d" (split "a,b" ",") 1.0 -7}}',
     '["a" "b"] 1 -7\n'),
    ('{{printf "%T %T %T %T" 1 "a" 1.5 true}}',
     'int string float64 bool\n'),
    ('{{slice (split "a,b,c" ",") 1}}',
     '[b c]\n'),
    ('{{println}}x',
     '\nx\n'),
    ('{{12345678901234567890}}',
     'ERR:template parsing error: template: :1:2: executing "" at <12345678901234567890>: 12345678901234567890 overflows int\n'),
    ('{{.ID | truncate 3}}',
     'ERR:template parsing error: template: :1:17: executing "" at <3>: expected string; found 3\n'),
    ('{{truncate 3 .ID}}',
     'ERR:template parsing error: template: :1:11: executing "" at <3>: expected string; found 3\n'),
    ('{{"unterminated}}',
     'ERR:template parsing error: template: :1: unterminated quoted string\n'),
    ('{{.Tag)}}',
     'ERR:template parsing error: template: :1: unexpected right paren\n'),
    ('{{(.Tag}}',
     'ERR:template parsing error: template: :1: unclosed left paren\n'),
    ('{{.Tag -}}x{{- .Tag}}',
     'onexone\n'),
    ('{{-.Tag}}',
     'ERR:template parsing error: template: :1: bad number syntax: "-.T"\n'),
    ('{{if .Tag}}a{{else}}b{{else}}c{{end}}',
     'ERR:template parsing error: template: :1: expected end; found {{else}}\n'),
    ('{{range $i, $e := split "a,b" ","}}{{$i}}{{end}}{{$i}}',
     'ERR:template parsing error: template: :1: undefined variable "$i"\n'),
    ('{{with .Tag}}{{.}}{{else}}none{{end}}',
     'one\n'),
    ('{{with ""}}x{{else with .Tag}}{{.}}{{end}}',
     'one\n'),
    ('{{range split "a,b" ","}}{{continue}}x{{end}}y',
     'y\n'),
    ('{{break}}',
     'ERR:template parsing error: template: :1: {{break}} outside {{range}}\n'),
    ('{{.Tag | len}} {{printf "%s" .Tag | upper}}',
     '3 ONE\n'),
    ('{{.Tag | "x"}}',
     'ERR:template parsing error: template: :1: non executable command in pipeline stage 2\n'),
    ('{{(split "a,b" ",").X}}',
     'ERR:template parsing error: template: :1:15: executing "" at <",">: can\'t evaluate field X in type []string\n'),
    ('{{$x := .Tag}}{{$x}}{{$x := "y"}}{{$x}}',
     'oney\n'),
    ('{{if and .Tag (eq .Tag "one")}}yes{{end}}',
     'yes\n'),
    ('{{or .Nope2 "d"}}',
     'ERR:template parsing error: template: :1:5: executing "" at <.Nope2>: can\'t evaluate field Nope2 in type *formatter.imageContext\n'),
    ('{{index (split "a,b" ",") "x"}}',
     'ERR:template parsing error: template: :1:2: executing "" at <index (split "a,b" ",") "x">: error calling index: cannot index slice/array with type string\n'),
    ('{{slice .Tag 2 1}}',
     'ERR:template parsing error: template: :1:2: executing "" at <slice .Tag 2 1>: error calling slice: invalid slice index: 2 > 1\n'),
    ('{{printf "%5.2s|%-6v|%q" "abc" true "a\\"b"}}',
     '   ab|true  |"a\\"b"\n'),
    ('{{json .Size}}',
     '"2B"\n'),
    ('{{"a" "b"}}',
     'ERR:template parsing error: template: :1:2: executing "" at <"a">: can\'t give argument to non-function "a"\n'),
    ('{{.Tag | .ID}}',
     'ERR:template parsing error: template: :1:9: executing "" at <.ID>: wrong number of args for ID: want 0 got 1\n'),
    ('{{eq}}',
     'ERR:template parsing error: template: :1:2: executing "" at <eq>: wrong number of args for eq: want at least 1 got 0\n'),
    ('{{not}}',
     'ERR:template parsing error: template: :1:2: executing "" at <not>: wrong number of args for not: want 1 got 0\n'),
    ('{{ne 1}}',
     'ERR:template parsing error: template: :1:2: executing "" at <ne>: wrong number of args for ne: want 2 got 1\n'),
    ('{{lt true false}}',
     'ERR:template parsing error: template: :1:2: executing "" at <lt true false>: error calling lt: invalid type for comparison\n'),
    ('{{len .Tag}}{{len (split "a,b,c" ",")}}',
     '33\n'),
    ('{{upper 3}}',
     'ERR:template parsing error: template: :1:8: executing "" at <3>: expected string; found 3\n'),
    ('{{pad .Tag "x" 1}}',
     'ERR:template parsing error: template: :1:11: executing "" at <"x">: expected integer; found "x"\n'),
    ('{{truncate .Tag 1.5}}',
     'ERR:template parsing error: template: :1:16: executing "" at <1.5>: expected integer; found 1.5\n'),
    ('{{join (split .Tag "n") "-"}}',
     'o-e\n'),
    ('{{split .Tag}}',
     'ERR:template parsing error: template: :1:2: executing "" at <split>: wrong number of args for split: want 2 got 1\n'),
    ('{{.Tag.}}',
     'ERR:template parsing error: template: :1: unexpected <.> in operand\n'),
    ('{{"\\z"}}',
     'ERR:template parsing error: template: :1: invalid syntax\n'),
    ("{{'ab'}}",
     "ERR:template parsing error: template: :1: malformed character constant: 'ab'\n"),
    ('{{0x1G}}',
     'ERR:template parsing error: template: :1: bad number syntax: "0x1G"\n'),
    ('{{1 2}}',
     'ERR:template parsing error: template: :1:2: executing "" at <1>: can\'t give argument to non-function 1\n'),
    ('{{/* unclosed',
     'ERR:template parsing error: template: :1: unclosed comment\n'),
    ('{{/* a */ .Tag}}',
     'ERR:template parsing error: template: :1: comment ends before closing delimiter\n'),
    ('{{range $i := split "a,b" ","}}{{$i}}{{end}}',
     'ab\n'),
    ('{{range $i, $e := .Tag}}{{end}}',
     'ERR:template parsing error: template: :1:18: executing "" at <.Tag>: range can\'t iterate over one\n'),
    ('{{range 0}}x{{else}}empty{{end}}',
     'empty\n'),
    ('{{printf "%d" 3.0}} {{printf "%s" 1.0}} {{printf "%v|%6.3v|%x" 2.5 3.14159 "é"}}',
     '%!d(float64=3) %!s(float64=1) 2.5|  3.14|c3a9\n'),
    ('{{print 1.0 2.5e10 1e-7 "s" 100000.0 1000000.0}}',
     '1 2.5e+10 1e-07s100000 1e+06\n'),
    ('{{println 0.1 "x" true}}',
     '0.1 x true\n\n'),
    ('{{json 1e21}} {{json 1e-7}} {{json 123456789.0}} {{json 0.000001}} {{json 1e20}}',
     '1e+21 1e-7 123456789 0.000001 100000000000000000000\n'),
    ('{{ .Tag -}}   {{- "|" }}',
     'one|\n'),
    ('{{.Tag\n}}',
     'one\n'),
    ('a {{- /* comment */ -}} b',
     'ab\n'),
    ('{{range $k, $v := split "x,y" ","}}{{$k}}:{{$v}} {{end}}',
     '0:x 1:y \n'),
    ('{{if not .Tag}}empty{{else if eq .Tag "one"}}first{{end}}',
     'first\n'),
    ('{{ printf "%-10s|" .Repository }}{{ printf "%10s|" .Tag }}',
     'small     |       one|\n'),
    ('{{.Size | printf "%q"}}',
     '"2B"\n'),
    ('{{ "a" | eq "a" }}',
     'true\n'),
    ('{{ index "" 0 }}',
     'ERR:template parsing error: template: :1:3: executing "" at <index "" 0>: error calling index: reflect: string index out of range\n'),
    ('{{ len nil }}',
     'ERR:template parsing error: template: :1:3: executing "" at <len nil>: error calling len: reflect: call of reflect.Value.Type on zero Value\n'),
    ('{{ nil }}',
     'ERR:template parsing error: template: :1:3: executing "" at <nil>: nil is not a command\n'),
    ('{{ .Tag | nil }}',
     'ERR:template parsing error: template: :1: non executable command in pipeline stage 2\n'),
    ('{{define "x"}}a{{end}}',
     '\n'),
    ('{{ $.Tag }} {{ $.Nope }}',
     'ERR:template parsing error: template: :1:16: executing "" at <$.Nope>: can\'t evaluate field Nope in type *formatter.imageContext\n'),
    ('{{ urlquery "a b" "c" }} {{ html 1 "<" }}',
     'a+bc 1&lt;\n'),
    ('{{ printf "%v" }} {{ printf "%+d %x %X %o %b %c" 5 255 255 8 5 9731 }}\n',
     '%!v(MISSING) +5 ff FF 10 101 ☃\n\n'),
]


def _docker_like(fmt: str, rows: list[object], headers: dict[str, str] = HEADERS) -> str:
    try:
        return F.render(fmt, rows, headers)
    except TemplateError as e:
        return "ERR:" + str(e) + "\n"


@pytest.mark.parametrize(("fmt", "expected"), DOCKER_CASES)
def test_renders_like_docker(fmt: str, expected: str) -> None:
    row = Struct("*formatter.imageContext", ROW)
    assert _docker_like(fmt, [row]) == expected


# --------------------------------------------------------------------------- templates


def run(text: str, data: object = None, **kw: object) -> str:
    return F.parse(text).execute(data, **kw)  # type: ignore[arg-type]


def test_go_printing_of_values() -> None:
    data = {"s": "x", "i": 3, "f": 2.5, "t": True, "n": None, "l": ["a", 1, None],
            "m": {"b": 2, "a": "x"}, "e": [], "big": 1e21}
    assert run("{{.s}} {{.i}} {{.f}} {{.t}} {{.n}} {{.l}} {{.m}} {{.e}} {{.big}} {{.no}}",
               data) == "x 3 2.5 true <nil> [a 1 <nil>] map[a:x b:2] [] 1e+21 <no value>"


def test_nested_fields_variables_and_missing_keys() -> None:
    data = {"A": {"B": {"C": "deep"}}, "L": [{"N": 1}, {"N": 2}]}
    assert run("{{.A.B.C}}|{{$.A.B.C}}|{{.A.X.Y}}", data) == "deep|deep|<no value>"
    assert run("{{range .L}}{{.N}}{{$.A.B.C}};{{end}}", data) == "1deep;2deep;"
    assert run("{{$v := .A.B}}{{$v.C}}", data) == "deep"
    with pytest.raises(TemplateError, match='map has no entry for key "X"'):
        run("{{.A.X}}", data, missing_key_error=True)
    with pytest.raises(TemplateError, match=r"nil pointer evaluating interface \{\}\.Y"):
        run("{{.A.N.Y}}", {"A": {"N": None}})


def test_range_over_maps_ints_and_empty_values() -> None:
    assert run("{{range $k, $v := .}}{{$k}}={{$v}},{{end}}", {"b": 1, "a": 2}) == "a=2,b=1,"
    assert run("{{range .}}x{{else}}empty{{end}}", []) == "empty"
    assert run("{{range .}}x{{else}}none{{end}}", None) == "none"
    assert run("{{range $i, $e := .}}{{$i}}{{$e}}{{end}}", ["a", "b"]) == "0a1b"
    assert run("{{range 3}}{{.}}{{end}}") == "012"
    assert run("{{range .}}{{if eq . 2}}{{continue}}{{end}}{{if eq . 4}}{{break}}{{end}}"
               "{{.}}{{end}}", [1, 2, 3, 4, 5]) == "13"


def test_if_with_else_chains_and_truth() -> None:
    tmpl = "{{if .}}T{{else}}F{{end}}"
    for falsy in (0, 0.0, "", [], {}, None, False):
        assert run(tmpl, falsy) == "F"
    for truthy in (1, "0", [0], {"a": 1}, True):
        assert run(tmpl, truthy) == "T"
    assert run("{{with .X}}{{.}}{{else with .Y}}y{{.}}{{else}}none{{end}}",
               {"X": "", "Y": 5}) == "y5"
    assert run("{{if and .A (not .B)}}ok{{end}}{{or .B .C}}", {"A": 1, "B": 0, "C": "c"}) == "okc"


def test_trim_markers_and_comments() -> None:
    assert run("a  \n {{- .}} \n\t{{- /* c */ -}}\n  b", "x") == "axb"
    assert run("{{- 3 -}}") == "3"
    assert run("{{-3}}") == "-3"  # a number, not a trim marker
    assert run("x {{/* no trim */}} y") == "x  y"


def test_define_template_and_block() -> None:
    text = ('{{define "item"}}<{{.}}>{{end}}'
            '{{range .}}{{template "item" .}}{{end}}'
            '{{block "tail" "end"}}[{{.}}]{{end}}')
    assert run(text, ["a", "b"]) == "<a><b>[end]"
    with pytest.raises(TemplateError, match='template "nope" not defined'):
        run('{{template "nope"}}')


def test_struct_rows_are_strict_and_methods_take_arguments() -> None:
    row = Struct("*formatter.ContainerContext", {"ID": "abc", "Label": lambda k: k.upper()})
    assert run('{{.Label "x"}} {{"y" | .Label}}', row) == "X Y"
    with pytest.raises(TemplateError) as err:
        run("{{.Names}}", row)
    assert err.value.go_message == ('template: :1:2: executing "" at <.Names>: '
                                    "can't evaluate field Names in type *formatter.ContainerContext")
    with pytest.raises(TemplateError, match="wrong number of args for Label: want 1 got 0"):
        run("{{.Label}}", row)


def test_parse_errors_have_go_messages_and_template_names() -> None:
    with pytest.raises(TemplateError) as err:
        F.parse("{{foo}}", name="version")
    assert err.value.go_message == 'template: version:1: function "foo" not defined'
    assert str(err.value) == 'template: version:1: function "foo" not defined'
    cases = {
        "{{if .}}x{{else}}y{{else}}z{{end}}": "expected end; found {{else}}",
        "{{break}}": "{{break}} outside {{range}}",
        "\n\n{{.X": "template: :3: unclosed action",
        "{{$x := 1}}{{end}}": "unexpected {{end}}",
        "{{range $a, $b, $c := .}}{{end}}": "too many declarations in range",
        "{{.X | 3}}": "non executable command in pipeline stage 2",
        '{{"a}}': "unterminated quoted string",
        "{{/* x": "unclosed comment",
        "{{(.X}}": "unclosed left paren",
        "{{.X)}}": "unexpected right paren",
        '{{"s".X}}': 'unexpected . after term "\\"s\\""',
        "{{3.X}}": 'bad number syntax: "3.X"',
        "{{$y = 1}}": 'undefined variable "$y"',
    }
    for text, message in cases.items():
        with pytest.raises(TemplateError) as err:
            F.parse(text)
        assert message in err.value.go_message, text


def test_exec_error_positions_count_lines_and_bytes() -> None:
    with pytest.raises(TemplateError) as err:
        run("x\né {{.X.Y}}", {"X": "s"})
    # a field chain is reported where its last field starts, in bytes from the line start
    assert err.value.go_message == ('template: :2:7: executing "" at <.X.Y>: '
                                    "can't evaluate field Y in type string")
    assert not err.value.parse_error


def test_function_argument_checks() -> None:
    assert run('{{join . ", "}}', ["a", "b"]) == "a, b"
    with pytest.raises(TemplateError, match=r"wrong type for value; expected \[\]string; got "
                                            r"\[\]interface \{\}"):
        run('{{join . ","}}', ["a", 1])
    with pytest.raises(TemplateError, match="invalid value; expected string"):
        run("{{upper .Missing}}", {})
    assert run("{{print .Missing}}", {}) == "<nil>"  # missing values reach functions as nil
    assert run("{{index . \"k\"}}|{{index . \"none\"}}", {"k": "v"}) == "v|"
    assert run("{{index .L \"x\"}}", {"L": None}) == ""  # a null map indexes as empty
    assert run("{{index . 1 0}}", [[1], ["x", "y"]]) == "x"
    assert run("{{slice . 1}}{{slice \"héllo\" 0 1}}", ["a", "b", "c"]) == "[b c]h"
    assert run("{{len .}}", {"a": 1}) == "1"


def test_html_urlquery_call() -> None:
    assert run('{{html "<a href=\\"x\\">&\'"}}') == "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"
    assert run('{{urlquery "a b/c?d"}}') == "a+b%2Fc%3Fd"
    assert run("{{call .F 2 3}}", {"F": lambda a, b: a * b}) == "6"


def test_printf_verbs() -> None:
    assert run('{{printf "%5.1f|%-4d|%04d|%+d|%x|%X|%o|%b|%c|%U|%q|%v|%t|%%" '
               '3.14159 7 42 5 255 255 8 5 65 9731 "q" 1.5 true}}') == \
        "  3.1|7   |0042|+5|ff|FF|10|101|A|U+2603|\"q\"|1.5|true|%"
    assert run('{{printf "%s|%d"}}') == "%!s(MISSING)|%!d(MISSING)"
    assert run('{{printf "x" 1 "a"}}') == "x%!(EXTRA int=1, string=a)"
    assert run('{{printf "%s %v" . .}}', ["a", "b"]) == "[a b] [a b]"
    assert run('{{printf "%d" .}}', [1, 2]) == "[1 2]"
    assert run('{{printf "%e|%g|%G" 1234.5 0.00001234 1e21}}') == "1.234500e+03|1.234e-05|1E+21"
    assert run('{{printf "%s" .}}', None) == "%!s(<nil>)"


def test_execute_partial_keeps_output_before_the_error() -> None:
    tmpl = F.parse("a{{.X}}b{{len 3}}c")
    assert tmpl.execute_partial({"X": 1}) == "a1b"


def test_header_functions_keep_column_names() -> None:
    tmpl = F.parse('{{upper .A}} {{json .A}} {{truncate .A 1}} {{split .A "x"}} {{pad .A 1 1}}')
    assert tmpl.execute({"A": "axb"}, header=True) == "axb axb axb axb  axb "


# --------------------------------------------------------------------------- json


def test_go_json_numbers_and_escapes() -> None:
    assert F.go_json([1e21, 1e-7, 123456789.0, 0.000001, 1e20, -0.5, 3, 0.0]) == \
        "[1e+21,1e-7,123456789,0.000001,100000000000000000000,-0.5,3,0]"
    s = "<a>&\u2028\x01\b\f\n\"\\é"
    assert F.go_json(s) == '"<a>&\\u2028\\u0001\\b\\f\\n\\"\\\\é"'
    assert F.go_json(s, escape_html=True) == \
        '"\\u003ca\\u003e\\u0026\\u2028\\u0001\\b\\f\\n\\"\\\\é"'
    assert F.go_json({"b": [], "a": {}, "c": None}) == '{"b":[],"a":{},"c":null}'
    assert F.go_json({"b": 1, "a": 2}, sort_keys=True) == '{"a":2,"b":1}'


def test_go_json_struct_rows_are_sorted_escaped_and_skip_methods() -> None:
    row = Struct("*x", {"Z": "<", "A": {"d": 1, "c": 2}, "M": lambda: 1})
    assert F.go_json(row) == '{"A":{"c":2,"d":1},"Z":"\\u003c"}'
    plain = Struct("x", {"Z": "<", "A": 1}, marshal=False)
    assert F.go_json(plain) == '{"Z":"<","A":1}'


def test_go_json_indent() -> None:
    assert F.go_json({"a": [1, {}], "b": {"c": []}}, indent="  ") == (
        '{\n  "a": [\n    1,\n    {}\n  ],\n  "b": {\n    "c": []\n  }\n}')


def test_go_json_rejects_nan() -> None:
    with pytest.raises(TemplateError, match="json: unsupported value: NaN"):
        run("{{json .}}", float("nan"))


# --------------------------------------------------------------------------- tabwriter


def test_tabwrite_docker_settings() -> None:
    assert F.tabwrite("A\tBB\tC\nxx\tyy\tz\n") == "A         BB        C\nxx        yy        z\n"
    # a cell wider than minwidth widens its column by the cell plus 3 of padding
    assert F.tabwrite("ID\tNAME\nabcdefghijkl\tx\n") == "ID             NAME\nabcdefghijkl   x\n"


def test_tabwrite_blocks_end_at_lines_without_tabs() -> None:
    text = "A\tB\nxx\tyy\nno tabs here\nlong-cell-value\tz\n"
    assert F.tabwrite(text) == ("A         B\nxx        yy\nno tabs here\n"
                                "long-cell-value   z\n")


def test_tabwrite_columns_are_blocks_of_consecutive_cells() -> None:
    text = "a\tbbbbbbbbbbbbbbb\tc\nd\te\nf\tg\th\n"
    assert F.tabwrite(text) == ("a         bbbbbbbbbbbbbbb   c\n"
                                "d         e\n"
                                "f         g         h\n")


def test_tabwrite_wide_runes_empty_cells_and_no_final_newline() -> None:
    assert F.tabwrite("你好\tx\nab\ty\n") == "你好      x\nab        y\n"
    assert F.tabwrite("\tx\na\t\n") == "          x\na         \n"
    assert F.tabwrite("a\tb") == "a         b"
    assert F.tabwrite("") == ""


# --------------------------------------------------------------------------- render


def test_render_dispatch() -> None:
    rows = [Struct("*r", {"ID": "1", "Tag": "<a>"}), Struct("*r", {"ID": "22", "Tag": "b"})]
    headers = {"ID": "IMAGE ID", "Tag": "TAG"}
    assert F.render("table {{.ID}}\\t{{.Tag}}", rows, headers) == \
        "IMAGE ID   TAG\n1          <a>\n22         b\n"
    assert F.render("json", rows, headers) == \
        '{"ID":"1","Tag":"\\u003ca\\u003e"}\n{"ID":"22","Tag":"b"}\n'
    assert F.render("{{.ID}}:{{.Tag}}", rows, headers) == "1:<a>\n22:b\n"
    assert F.render("{{.ID}}\\n", rows, headers) == "1\n\n22\n\n"
    assert F.render("table {{.ID}}", [], headers) == "IMAGE ID\n"
    assert F.render("{{.ID}}", [], headers) == ""
    # an unknown column has no title
    assert F.render("table {{.ID}}\t{{.Nope}}", [], headers) == "IMAGE ID   <no value>\n"


def test_render_errors_print_nothing() -> None:
    rows = [Struct("*r", {"ID": "1"}), Struct("*r", {})]
    with pytest.raises(TemplateError) as err:
        F.render("{{.ID}}", rows, {})
    assert str(err.value).startswith("template parsing error: template: :1:2: executing")
    assert isinstance(err.value, InvalidArgument)


def test_resolve_format() -> None:
    assert F.resolve_format(None, table="table {{.A}}") == "table {{.A}}"
    assert F.resolve_format("table", table="table {{.A}}", quiet=True) == "{{.ID}}"
    assert F.resolve_format("raw", table="t", raw="r: {{.A}}") == "r: {{.A}}"
    assert F.resolve_format("{{.B}}", table="t", quiet=True) == "{{.B}}"


# --------------------------------------------------------------------------- inspect


OBJ = {"Id": "sha256:abc", "RepoTags": ["a:1"], "RepoDigests": [], "Comment": "import <b>&",
       "Config": {"Env": None, "Labels": {"k": "v"}}, "State": {"Health": None}}


def test_inspect_json_like_docker() -> None:
    assert F.inspect_json([]) == "[]\n"
    assert F.inspect_json([OBJ]) == (
        '[\n    {\n        "Id": "sha256:abc",\n        "RepoTags": [\n            "a:1"\n'
        '        ],\n        "RepoDigests": [],\n        "Comment": "import <b>&",\n'
        '        "Config": {\n            "Env": null,\n            "Labels": {\n'
        '                "k": "v"\n            }\n        },\n        "State": {\n'
        '            "Health": null\n        }\n    }\n]\n')


def test_inspect_format() -> None:
    out, errors = F.inspect_format("{{.Id}} {{index .Config.Labels \"k\"}} {{.Config.Labels.x}}",
                                   [OBJ, OBJ])
    assert (out, errors) == ("sha256:abc v <no value>\nsha256:abc v <no value>\n", [])
    out, errors = F.inspect_format("json", [OBJ])
    assert json.loads(out) == [OBJ] and out.endswith("}]\n")
    # a field missing from the object itself is an error, deeper down it is not
    out, errors = F.inspect_format("{{.Nope}}", [OBJ, {"Nope": 1}])
    assert out == "1\n"
    assert errors == ['template parsing error: template: :1:2: executing "" at <.Nope>: '
                      'map has no entry for key "Nope"']
    out, errors = F.inspect_format("{{.State.Health.Status}}", [OBJ])
    assert (out, errors) == ("<no value>\n", [])
    out, errors = F.inspect_format("{{.Nope}}", [OBJ])
    assert out == "\n" and len(errors) == 1
    assert F.inspect_format(None, [OBJ])[0] == F.inspect_json([OBJ])


def test_inspect_format_parse_error_exits_64() -> None:
    with pytest.raises(TemplateError) as err:
        F.inspect_format("{{foo}}", [OBJ])
    assert str(err.value) == 'template parsing error: template: :1: function "foo" not defined'
    assert err.value.exit_code == 64


def test_check_inspect_format() -> None:
    F.check_inspect_format(None)
    F.check_inspect_format("json")
    F.check_inspect_format("{{.Id}}")
    with pytest.raises(TemplateError) as err:
        F.check_inspect_format("{{.Id")
    assert err.value.exit_code == 64
    assert str(err.value) == "template parsing error: template: :1: unclosed action"


def test_format_object_for_version_and_info() -> None:
    data = {"Client": {"Version": "1.0"}, "Server": None}
    assert F.format_object("{{.Client.Version}}", data, name="version") == ("1.0\n", None)
    assert F.format_object("json", data) == ('{"Client":{"Version":"1.0"},"Server":null}\n',
                                             None)
    # execution errors keep what was printed before them, and Go's bare message
    text, error = F.format_object("a{{.Nope}}", data, name="version")
    assert text == "a\n"
    assert error == ('template: version:1:3: executing "version" at <.Nope>: '
                     'map has no entry for key "Nope"')
    assert F.format_object("{{.Server.Version}}", data) == ("<no value>\n", None)
    with pytest.raises(TemplateError) as err:
        F.format_object("{{foo}}", data, name="version", parse_exit_code=64)
    assert str(err.value) == 'template parsing error: template: version:1: function "foo" not defined'
    assert err.value.exit_code == 64
    # docker version aligns its output with a 20-column tabwriter
    assert F.tabwrite("a:\tb\n", 20, 1, 1) == "a:                  b\n"


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1982261, "1.982MB"), (999_999, "1000kB"),
    (1_500_000_000, "1.5GB"), (10**24, "1YB"), (10**27, "1000YB"), (-5, "-5B"),
])
def test_human_size(size: int, text: str) -> None:
    assert F.human_size(size) == text


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (2, "2B"), (4_260_000, "4.26MB"), (1_982_259, "1.98MB"), (307_270, "307kB"),
    (999_950, "1e+03kB"), (1_234_567_890, "1.23GB"),
])
def test_docker_size_three_digits(size: int, text: str) -> None:
    assert F.docker_size(size) == text


def test_bytes_size() -> None:
    assert F.bytes_size(0) == "0B"
    assert F.bytes_size(1536) == "1.5KiB"
    assert F.bytes_size(1 << 20) == "1MiB"
    assert F.bytes_size(17 * (1 << 20) + 1) == "17MiB"
    assert F.bytes_size(1023) == "1023B"


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "Less than a second"), (0.999, "Less than a second"), (1, "1 second"),
    (59, "59 seconds"), (60, "About a minute"), (119, "About a minute"), (120, "2 minutes"),
    (3599, "59 minutes"), (3600, "About an hour"), (5399, "About an hour"), (5400, "2 hours"),
    (47 * 3600 + 1799, "47 hours"), (47 * 3600 + 1800, "2 days"), (13 * 86400, "13 days"),
    (14 * 86400, "2 weeks"), (59 * 86400, "8 weeks"), (60 * 86400, "2 months"),
    (729 * 86400, "24 months"), (730 * 86400, "2 years"), (3650 * 86400, "10 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert F.human_duration(seconds) == text


def test_since() -> None:
    assert F.since(1000, 1100) == "About a minute ago"
    assert F.since(time.time() - 3 * 86400) == "3 days ago"


@pytest.mark.parametrize(("text", "size"), [
    ("100", 100), ("512m", 512 << 20), ("1.5g", 1536 << 20), ("10KiB", 10240), ("1 KB", 1024),
    ("5b", 5), ("1kib", 1024), ("2T", 2 << 40), ("1.5", 1), ("0", 0),
])
def test_parse_size(text: str, size: int) -> None:
    assert F.parse_size(text) == size


@pytest.mark.parametrize(("text", "message"), [
    ("x", "invalid size: 'x'"), ("-1", "invalid size: '-1'"), ("1q", "invalid suffix: 'q'"),
    ("5bb", "invalid suffix: 'bb'"), ("1kxb", "invalid suffix: 'kxb'"),
    ("1kibb", "invalid suffix: 'kibb'"), ("1..2m", 'parsing "1..2": invalid syntax'),
])
def test_parse_size_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        F.parse_size(text)
    assert message in str(err.value)


def test_go_time_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert F.go_time(1796108150) == "2026-12-01 06:55:50 +0000 UTC"
        assert F.go_time_rfc3339(1796108150) == "2026-12-01T06:55:50Z"
        monkeypatch.setenv("TZ", "America/New_York")
        time.tzset()
        assert F.go_time(1796108150) == "2026-12-01 01:55:50 -0500 EST"
        assert F.go_time_rfc3339(1796108150) == "2026-12-01T01:55:50-05:00"
    finally:
        monkeypatch.undo()
        time.tzset()


# --------------------------------------------------------------------------- ids and text


def test_truncate_id() -> None:
    assert F.truncate_id("sha256:" + "0123456789abcdef" * 4) == "0123456789ab"
    assert F.truncate_id("0123456789abcdef") == "0123456789ab"
    assert F.truncate_id("<missing>") == "<missing>"
    assert F.truncate_id("") == ""


def test_ellipsis() -> None:
    assert F.ellipsis("abcdef", 4) == "abc…"
    assert F.ellipsis("abc", 3) == "abc"
    assert F.ellipsis("abc", 0) == ""
    assert F.ellipsis("abc", 1) == "a"
    assert F.ellipsis("你好世界", 5) == "你好…"
    assert F.ellipsis("你好", 4) == "你好"
    assert F.display_width("a你") == 3


def test_missing_is_falsy_and_prints_no_value() -> None:
    assert not MISSING
    assert run("{{.}}", MISSING) == "<no value>"


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys; import ketch.cli.formatting; "
            "print(','.join(m for m in ('typing', 'dataclasses', 'json', 're', 'datetime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": ":".join(sys.path)}, check=True).stdout.strip()
    assert out == ""
