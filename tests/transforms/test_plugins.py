"""Built-in plugins, plugin loading and validation, and the parser's routing."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import orjson
import pytest

from bench import genlog
from pipeline import plugin as plugin_mod
from pipeline.core import message
from pipeline.errors import PluginError
from pipeline.plugins import accesslog
from pipeline.transforms.parser import ParserOptions, make_processor

SAMPLES = Path(__file__).resolve().parents[1] / "data"

COMBINED = ('203.0.113.9 - - [10/Oct/2024:13:55:36 -0700] "GET /bitstream/handle/10023/1234/thesis.pdf'
            '?sequence=1 HTTP/1.1" 200 52311 "https://www.example.org/" "Mozilla/5.0 (X11)"')


@pytest.mark.parametrize(
    "path, kind, repository, item_id",
    [
        ("/bitstream/handle/10023/1234/thesis.pdf?sequence=1", "download", "dspace", "10023/1234"),
        ("/xmlui/bitstream/handle/10023/1234/thesis.pdf", "download", "dspace", "10023/1234"),
        ("/jspui/bitstream/10023/1234/3/thesis.pdf", "download", "dspace", "10023/1234"),
        ("/server/api/core/bitstreams/0f6d3a2e-1b2c-4d5e-8f90-123456789abc/content", "download",
         "dspace", "0f6d3a2e-1b2c-4d5e-8f90-123456789abc"),
        ("/handle/10023/1234", "item", "dspace", "10023/1234"),
        ("/items/0f6d3a2e-1b2c-4d5e-8f90-123456789abc", "item", "dspace",
         "0f6d3a2e-1b2c-4d5e-8f90-123456789abc"),
        ("/bitstream/handle/10023/1234/thesis.pdf.jpg?sequence=3", "thumbnail", "dspace", "10023/1234"),
        ("/1234/1/paper.pdf", "download", "eprints", "1234"),
        ("/id/eprint/1234/1/paper.pdf", "download", "eprints", "1234"),
        ("/1234/1.hassmallThumbnailVersion/paper.pdf", "thumbnail", "eprints", "1234"),
        ("/1234/", "item", "eprints", "1234"),
        ("/id/eprint/1234", "item", "eprints", "1234"),
        ("/handle/10023/1234/browse?type=author", "other", "", ""),
        ("/static/style.css", "other", "", ""),
    ],
)
def test_repository_requests_are_recognised(path: str, kind: str, repository: str, item_id: str) -> None:
    line = f'192.0.2.1 - - [01/Feb/2025:00:00:01 +0000] "GET {path} HTTP/1.1" 200 10 "-" "UA"'
    record = accesslog.parse_line(line)
    assert (record["kind"], record["repository"], record["item_id"]) == (kind, repository, item_id)


def test_combined_fields() -> None:
    record = accesslog.parse_line(COMBINED)
    assert record["client_ip"] == "203.0.113.9" and record["time"] == "2024-10-10T13:55:36-07:00"
    assert record["method"] == "GET" and record["status"] == 200 and record["bytes"] == 52311
    assert record["user_agent"] == "Mozilla/5.0 (X11)" and record["referrer"] == "https://www.example.org/"


def test_common_format_ipv6_and_xff() -> None:
    common = accesslog.parse_line('2001:db8::1 - bob [01/Feb/2025:00:00:01 +0100] "GET / HTTP/1.0" 304 -')
    assert common["client_ip"] == "2001:db8::1" and common["user"] == "bob" and common["bytes"] == 0
    assert common["user_agent"] == "" and common["status"] == 304
    line = COMBINED + ' "198.51.100.7, 10.0.0.1"'
    assert accesslog.parse_line(line)["client_ip"] == "203.0.113.9"
    assert accesslog.parse_line(line, use_xff=True)["client_ip"] == "198.51.100.7"
    assert accesslog.parse_line(line)["xff"] == "198.51.100.7, 10.0.0.1"


def test_escaped_quotes_in_request_and_agent() -> None:
    line = '192.0.2.1 - - [01/Feb/2025:00:00:01 +0000] "GET /a\\"b HTTP/1.1" 200 1 "-" "say \\"hi\\""'
    record = accesslog.parse_line(line)
    assert record["url"] == '/a\\"b' and record["user_agent"] == 'say \\"hi\\"'


@pytest.mark.parametrize("line", ["", "garbage", "1.2.3.4 - - [bad date] \"GET / HTTP/1.1\" 200 1"])
def test_unparseable_lines_raise(line: str) -> None:
    with pytest.raises(ValueError):
        accesslog.parse_line(line)


def _mutants(base: list[str], count: int, inserts: list[str], seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for n in range(count):
        chars = list(base[n % len(base)])
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars) + 1)
            if rng.random() < 0.2 and chars:
                del chars[min(at, len(chars) - 1)]
            else:
                chars.insert(at, rng.choice(inserts))
        out.append("".join(chars))
    return base + out


def test_fast_line_pattern_reads_backslash_free_lines_as_the_full_one() -> None:
    """Lines without a backslash take a simpler pattern: on those it must find the same fields
    (generated lines and 20,000 mutations: quotes, brackets, spaces, tabs, digits, dashes)."""
    from bench.genlog import lines

    base = list(lines(2000, seed=3)) + [COMBINED + ' "198.51.100.7"', COMBINED + ' "a" extra']
    matched = 0
    for line in _mutants(base, 20000, ['"', "[", "]", "\t", " ", "-", "7", '" "', "\u2003"], seed=7):
        if "\\" in line:
            continue
        full, fast = accesslog.LINE.match(line), accesslog._PLAIN_LINE.match(line)
        assert (full and (full.groups(), full.end())) == (fast and (fast.groups(), fast.end())), line
        matched += full is not None
    assert matched > 5000


def test_possessive_line_patterns_read_lines_as_backtracking_ones_would() -> None:
    """The line patterns never give back what a field took (possessive: no backtracking into
    it): every field ends where only one ending can be, so they must find what the same patterns
    with plain quantifiers find, backslashes and escaped quotes included."""
    import re

    def plain(quoted: str) -> re.Pattern[str]:
        return re.compile(r"(\S+) (\S+) (\S+) \[([^\]]{1,40})\] " + quoted + r" (\d{3}|-) (\d+|-)"
                          r"(?: " + quoted + " " + quoted + r")?(?: " + quoted + r")?")

    references = ((plain(r'"([^"\\]*(?:\\.[^"\\]*)*)"'), accesslog.LINE),
                  (plain(r'"([^"]*)"'), accesslog._PLAIN_LINE))
    escaped = COMBINED.replace("thesis", 'th\\"esis').replace("X11", 'X\\\\11') + ' "\\"a\\""'
    base = list(genlog.lines(1000, seed=4)) + [COMBINED, escaped, COMBINED + ' "198.51.100.7"']
    matched = 0
    for line in _mutants(base, 30000, ['"', "\\", '\\"', "[", "]", " ", "\t", "-", "7", '" "'], seed=8):
        for reference, ours in references:
            want, got = reference.match(line), ours.match(line)
            assert (want and (want.groups(), want.end())) == (got and (got.groups(), got.end())), line
            matched += want is not None
    assert matched > 20000


def test_grouped_routes_classify_as_one_alternation_would() -> None:
    import re

    from bench.genlog import lines

    # the context path tried first (greedy), where ours tries none first: the same routes
    greedy = [pattern.replace(accesslog._CTX, "(?:/[A-Za-z]+)?") for pattern, _, _ in accesslog.ROUTES]
    assert greedy != [pattern for pattern, _, _ in accesslog.ROUTES]
    reference = re.compile("|".join(f"(?:{pattern})" for pattern in greedy))
    paths = [accesslog.parse_line(line)["url"].partition("?")[0] for line in lines(3000, seed=5)]
    paths += ["/xmlui/bitstream/handle/1/2/a.pdf", "/7/bitstream/1/2/3/x", "/1/2/bitstream",
              "/handle/1/2/items/0f6d3a2e-1b2c-4d5e-8f90-123456789abc", "/id/eprint/3/handle/1/2"]
    for path in _mutants(paths, 20000, ["/", "1", ".", "handle/", "bitstream/", "items/", "x"], seed=9):
        match = reference.match(path)
        if match is None:
            expected = ("other", "", "")
        else:
            route = (match.lastindex - 1) // 2
            _, kind, repository = accesslog.ROUTES[route]
            ident, filename = match.group(2 * route + 1, 2 * route + 2)
            if kind == "download" and filename and accesslog._THUMB.search(filename):
                kind = "thumbnail"
            expected = (kind, repository, ident)
        assert accesslog.classify(path) == expected, path


def test_regexes_resist_adversarial_input() -> None:
    attacks = [
        '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "' + "\\\"" * 25000,
        '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "GET / HTTP/1.1" 200 1 "' + '" "' * 16000,
        "a " * 25000,
        "/bitstream/handle/" + "1." * 25000,
    ]
    for attack in attacks:
        started = time.perf_counter()
        try:
            accesslog.parse_line(attack)
        except ValueError:
            pass
        accesslog.classify(attack)
        assert time.perf_counter() - started < 0.5


def test_kontext_sample_records() -> None:
    loaded = plugin_mod.load("kontext", options={"timezone": "Europe/Prague"})
    records, bots = [], 0
    for path in sorted((SAMPLES / "kontext-sample").glob("application.log.*")):
        for line in path.read_text().splitlines():
            out = loaded.parse({"service": "kontext", "logline": line})
            if out is None:
                bots += 1
            else:
                records.append(out)
    assert bots == 3 and len(records) == 13
    first = records[0]
    assert first["time"] == "2017-01-31T19:19:22.930685+01:00" and first["ip"] == "93.91.49.9"
    assert "request" not in first and first["action"] == "first" and len(first["id"]) == 40
    assert len({r["id"] for r in records}) == len(records)


def test_kontext_bare_record_and_remote_addr() -> None:
    loaded = plugin_mod.load("kontext")
    record = {"date": "2024-03-01 10:00:00", "action": "view", "user_id": 1, "params": {},
              "request": {"REMOTE_ADDR": "192.0.2.5", "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"}}
    out = loaded.parse(record)
    assert out is not None and out["ip"] == "192.0.2.5" and out["time"] == "2024-03-01T10:00:00+00:00"
    assert loaded.parse(dict(record)) == out  # stable id
    keep = plugin_mod.load("kontext", options={"keep_bots": "yes", "bots": "^Mozilla"})
    assert keep.parse(record)["is_bot"] is True


def test_plugin_options_are_validated() -> None:
    with pytest.raises(PluginError, match="takes no option 'opt_colour'"):
        plugin_mod.load("kontext", options={"colour": "red"})
    with pytest.raises(PluginError, match="unknown timezone"):
        plugin_mod.load("kontext", options={"timezone": "Mars/Olympus"})


def test_original_style_plugin_from_plugins_folder(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "oldstyle.py").write_text(
        "import json\n"
        "def parseline(jmsg):\n"
        "    d = json.loads(jmsg)\n"
        "    return {'line': d['logline'], 'service': d['service']}\n"
        "def get_openurl_params(c, worker_section, pl):\n"
        "    return {'rfr_id': c.get(worker_section, 'rfr_id')}\n"
    )
    loaded = plugin_mod.load("oldstyle", [tmp_path / "plugins"])
    assert loaded.parse({"service": "s", "logline": "x"}) == {"line": "x", "service": "s"}
    assert loaded.get_openurl_params is not None


@pytest.mark.parametrize(
    "source, message",
    [
        ("def other():\n    pass\n", "defines none of"),
        ("def parseline():\n    pass\n", "parseline() does not match the contract parseline(jmsg)"),
        ("def parse(item, extra):\n    pass\n", "does not match the contract parse(item)"),
        ("def parse(item):\n    pass\ndef get_openurl_params(c):\n    pass\n",
         "get_openurl_params(c, worker_section, pl)"),
        ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
        ("parseline = 42\n", "is not a function"),
    ],
)
def test_broken_plugins_fail_at_load_naming_plugin_and_function(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "broken.py").write_text(source)
    with pytest.raises(PluginError) as info:
        plugin_mod.load("broken", [tmp_path])
    assert "'broken'" in str(info.value) and message in str(info.value)


def test_missing_plugin() -> None:
    with pytest.raises(PluginError, match="not found"):
        plugin_mod.load("no_such_plugin_anywhere", [])


def _parser_opts(**kw: object) -> ParserOptions:
    base = {"listento": "in", "pushto": ("a", "b"), "plugin": "x"}
    base.update(kw)
    return ParserOptions(**base)  # type: ignore[arg-type]


def test_parser_fans_out_routes_others_and_dead_letters_raisers(tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(
        "def parse(item):\n"
        "    line = item['logline']\n"
        "    if line == 'boom':\n"
        "        raise ValueError('cannot parse this')\n"
        "    if line == 'skip':\n"
        "        return None\n"
        "    return {'word': line, 'kind': 'download' if line.startswith('d') else 'view'}\n"
    )
    loaded = plugin_mod.load("picky", [tmp_path])
    process = make_processor(loaded, _parser_opts(other_queue="rest", accept=("kind=download",)), "w")
    items = [{"service": "s", "logline": t, "src": "f", "off": i}
             for i, t in enumerate(["dl", "boom", "skip", "view", "dx"])]
    outcome = process(items, "in")
    pushes = {q: orjson.loads(p) for q, p in outcome.pushes}
    assert [r["word"] for r in pushes["a"]] == ["dl", "dx"] == [r["word"] for r in pushes["b"]]
    assert pushes["a"][0] == {"word": "dl", "kind": "download", "service": "s", "src": "f", "off": 0,
                              "logline": "dl"}
    assert [r.get("word", r.get("logline")) for r in pushes["rest"]] == ["skip", "view"]
    assert len(outcome.dead) == 1 and outcome.count == 5
    dead = orjson.loads(outcome.dead[0])
    assert "plugin picky raised ValueError: cannot parse this" in dead["reason"]
    assert dead["item"]["logline"] == "boom" and "Traceback" in dead["detail"]


def test_poison_values_set_aside_one_record_not_the_batch() -> None:
    """An access line with a size beyond 64 bits, and a JSON line nested deeper than encoding
    allows: each is dead-lettered alone, the real downloads beside them go on (before, the
    whole batch failed to encode, crashed the parser three times and was dead-lettered)."""
    good = ('192.0.2.1 - - [10/Oct/2024:13:55:36 +0200] "GET /bitstream/handle/1/2/f.pdf HTTP/1.1" '
            '200 {size} "-" "Mozilla/5.0"')
    items = [{"service": "s", "src": "f", "off": n, "logline": good.format(size=size)}
             for n, size in enumerate(["1234", "99999999999999999999", "5678"])]
    process = make_processor(plugin_mod.load("accesslog"), _parser_opts(), "w")
    outcome = process(items, "in")
    assert [r["bytes"] for r in orjson.loads(outcome.pushes[0][1])] == [1234, 5678]
    assert len(outcome.dead) == 1 and "out of range" in orjson.loads(outcome.dead[0])["reason"]

    nested = "[" * 300 + "]" * 300
    lines = ['{"a": 1}', '{"deep": ' + nested + '}', '{"b": 2}']
    items = [{"service": "s", "src": "f", "off": n, "logline": line} for n, line in enumerate(lines)]
    outcome = make_processor(plugin_mod.load("jsonlines"), _parser_opts(), "w")(items, "in")
    assert [r.get("a", r.get("b")) for r in orjson.loads(outcome.pushes[0][1])] == [1, 2]
    dead = orjson.loads(outcome.dead[0])
    assert "cannot be encoded" in dead["reason"] and dead["item"]["off"] == 1


def test_hanging_plugin_is_cut_off_by_the_time_limit(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import time\n"
        "def parse(item):\n"
        "    if item['logline'] == 'hang':\n"
        "        time.sleep(60)\n"
        "    return {'ok': True}\n"
    )
    loaded = plugin_mod.load("slow", [tmp_path])
    process = make_processor(loaded, _parser_opts(pushto=("a",), plugin_timeout_s=0.2), "w")
    started = time.monotonic()
    outcome = process([{"logline": "hang"}, {"logline": "fine"}], "in")
    assert time.monotonic() - started < 5
    assert len(outcome.dead) == 1 and "longer than 0.2s" in orjson.loads(outcome.dead[0])["reason"]
    assert len(orjson.loads(outcome.pushes[0][1])) == 1


ADVERSARIAL = [  # 50,000 characters each, shaped against the patterns that read them
    '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "' + '\\"' * 25_000,
    '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "GET / HTTP/1.1" 200 1 "' + '" "' * 16_666,
    "a " * 25_000,
    '1.1.1.1 - - [' + "[" * 50_000,
    '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "GET /bitstream/handle/' + "1/" * 25_000 + ' HTTP/1.1" 200 1',
    '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "GET /x.pdf HTTP/1.1" 200 1 "-" "' + "bot" * 16_666 + '"',
    "[QUERY] INFO: " + "{" * 50_000,
    '{"a": ' * 10_000,
    "\x00\xff" * 25_000,
]


@pytest.mark.parametrize("name", ["accesslog", "kontext", "jsonlines", "repository"])
def test_16_every_builtin_plugin_finishes_adversarial_input_in_time(name: str) -> None:
    """No catastrophic backtracking: 50,000-character hostile lines take milliseconds, not hours."""
    from pipeline.transforms.robots import counter_robots

    loaded = plugin_mod.load(name, options={"timezone": "UTC"} if name == "kontext" else None)
    worst = 0.0
    for attack in ADVERSARIAL:
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # refusing the line is fine; taking long is not
            loaded.parse({"service": "s", "logline": attack})
        worst = max(worst, time.perf_counter() - started)
    started = time.perf_counter()
    for attack in ADVERSARIAL:
        counter_robots().is_robot(attack)  # the COUNTER robots patterns read user agents
    worst = max(worst, (time.perf_counter() - started) / len(ADVERSARIAL))
    assert worst < 0.5, f"{name}: {worst:.2f}s on one adversarial line"


def test_a_megabyte_user_agent_costs_what_a_long_real_one_does() -> None:
    """A 1 MiB agent (the default max_line_bytes) took ~3.5 s in kontext and repository, and
    the robots cache kept every distinct one (60 of them: +66 MiB). Only the first 2,048
    characters are matched and cached."""
    import tracemalloc

    from pipeline.transforms import robots

    robots.counter_robots.cache_clear()
    robot = robots.counter_robots()
    assert robot.is_robot("Mozilla/5.0 (compatible; Googlebot/2.1)")
    assert robot.is_robot("x" * 3000 + " Googlebot") is False  # past the prefix: not looked at
    tracemalloc.start()
    started = time.perf_counter()
    for n in range(60):
        robot.is_robot(f"{n} " + "Mozilla/5.0 " * 90_000)
    took = time.perf_counter() - started
    grown = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert took < 2 and grown < 5 * 1024 * 1024, (took, grown)
    assert all(len(agent) <= robots.AGENT_CHARS for agent in robot._seen)  # no megabyte kept
    for n in range(robots.CACHED_AGENTS + 10):
        robot.is_robot(f"agent {n}")
    assert len(robot._seen) <= robots.CACHED_AGENTS


# -- accept checked against what the plugin declares it produces (FIELDS) -----------------


def test_accesslog_declares_exactly_the_fields_and_kinds_it_makes() -> None:
    record = accesslog.parse_line(COMBINED)
    assert set(accesslog.FIELDS) == set(record) | {"session_id"}
    with_session = accesslog.make_parser({"trailing": "session"})({"logline": COMBINED + ' "abc"'})
    assert set(accesslog.FIELDS) == set(with_session)
    assert accesslog.FIELDS["kind"] == {kind for _, kind, _ in accesslog.ROUTES} | {"thumbnail", "other"}
    assert accesslog.FIELDS["repository"] == {repo for _, _, repo in accesslog.ROUTES} | {""}
    from pipeline.plugins import repository

    assert repository.FIELDS is accesslog.FIELDS


def _accept(tmp_path: Path, plugin: str, accept: str) -> None:
    from pipeline import config
    from pipeline.transforms.parser import plugin_for

    path = tmp_path / "loglines.cfg"
    path.write_text(f"[worker_parse]\ntype = parser\nlistento = a\npushto = b\nplugin = {plugin}\n"
                    f"accept = {accept}\n")
    cfg = config.load(path)
    plugin_for(cfg, cfg.programs["worker_parse"])


@pytest.mark.parametrize("accept, expected", [
    ("knd=download", "plugin accesslog makes no field 'knd' (did you mean 'kind'? its fields: bytes, "
                     "click, click_slots, client_ip, ident, item_id, kind, logline, method, off, protocol, "
                     "referrer, remote_host, repository, robot, service, session, session_hash, session_id, "
                     "src, status, time, url, user, user_agent, user_key, xff)"),
    ("kind=downloads", "plugin accesslog never gives kind the value 'downloads' (did you mean "
                       "'download'? it gives: 'download', 'item', 'other', 'thumbnail')"),
    ("kind=download|itme", "never gives kind the value 'itme' (did you mean 'item'?"),
])
def test_accept_naming_what_the_plugin_never_makes_is_an_error(tmp_path: Path, accept: str,
                                                                expected: str) -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _accept(tmp_path, "accesslog", accept)
    err = info.value
    assert (err.section, err.key, err.value) == ("worker_parse", "accept", accept)
    assert expected in str(err) and str(tmp_path / "loglines.cfg") in str(err)


def test_accept_on_fields_that_are_there(tmp_path: Path) -> None:
    _accept(tmp_path, "accesslog", "kind=download|item, repository=dspace, status=200")
    _accept(tmp_path, "accesslog", "service=repository")  # carried from the item onto every record
    _accept(tmp_path, "kontext", "action=query")  # the application's own fields pass through
    _accept(tmp_path, "jsonlines", "anything=at all")  # declares nothing: records are the lines
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="never gives is_bot the value 'false' \\(did you mean 'False'\\?"):
        _accept(tmp_path, "kontext", "is_bot=false")


def test_a_plugin_declaring_fields_badly_fails_at_load(tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text('FIELDS = {"kind": "download"}\n\ndef parse(item):\n    return item\n')
    with pytest.raises(PluginError, match="FIELDS must map field names to None or a set"):
        plugin_mod.load("odd", [tmp_path])
    (tmp_path / "fine.py").write_text('FIELDS = {"kind": ["a", "b"], "n": None}\n\ndef parse(item):\n    return item\n')
    assert plugin_mod.load("fine", [tmp_path]).fields == {"kind": frozenset({"a", "b"}), "n": None}


def test_check_says_what_accept_cannot_match(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import main

    path = tmp_path / "loglines.cfg"
    path.write_text("[worker_parse]\ntype = parser\nlistento = a\npushto = b\nplugin = accesslog\n"
                    "accept = kind=downloads\n")
    assert main(["-c", str(path), "check"]) == 1
    err = capsys.readouterr().err
    assert "section [worker_parse], key 'accept', value 'kind=downloads': plugin accesslog never " \
           "gives kind the value 'downloads'" in err


BATCH_PLUGIN = (
    "def parse_batch(lines):\n"
    "    if 'raise' in lines:\n"
    "        raise RuntimeError('this batch is beyond me')\n"
    "    if 'short' in lines:\n"
    "        return [None]\n"
    "    out = []\n"
    "    for line in lines:\n"
    "        if line == 'boom':\n"
    "            out.append(ValueError('cannot parse this'))\n"
    "        elif line == 'skip':\n"
    "            out.append(None)\n"
    "        else:\n"
    "            out.append({'word': line, 'kind': 'download' if line.startswith('d') else 'view'})\n"
    "    return out\n"
)


def _both_ways(tmp_path: Path, words: list[str]) -> tuple[object, object]:
    """One run of lines through parse_batch, and the same lines as items through parse."""
    (tmp_path / "batchy.py").write_text(BATCH_PLUGIN)
    loaded = plugin_mod.load("batchy", [tmp_path])
    assert loaded.parse_batch is not None
    process = make_processor(loaded, _parser_opts(other_queue="rest", accept=("kind=download",)), "w")
    run = message.Run("s", "f", 100, words)
    by_run = process([run], "in")
    by_item = process(list(run.items()), "in")
    return by_run, by_item


def _summary(outcome) -> tuple[dict, list, int]:  # type: ignore[no-untyped-def]
    pushes = {q: orjson.loads(p) for q, p in outcome.pushes}
    dead = [(d["item"], d["reason"].split(":")[0]) for d in map(orjson.loads, outcome.dead)]
    return pushes, dead, outcome.count


def test_a_run_through_parse_batch_gives_what_the_same_lines_give_one_by_one(tmp_path: Path) -> None:
    by_run, by_item = _both_ways(tmp_path, ["dl", "boom", "skip", "view", "dé"])
    pushes, dead, count = _summary(by_run)
    assert count == 5 and (pushes, dead, count) == _summary(by_item)
    assert pushes["a"] == [  # offsets in UTF-8 bytes: "dl\n" "boom\n" "skip\n" "view\n"
        {"word": "dl", "kind": "download", "service": "s", "src": "f", "off": 100, "logline": "dl"},
        {"word": "dé", "kind": "download", "service": "s", "src": "f", "off": 118, "logline": "dé"},
    ] == pushes["b"]
    assert [r.get("word", r.get("logline")) for r in pushes["rest"]] == ["skip", "view"]
    assert pushes["rest"][0] == {"service": "s", "src": "f", "off": 108, "logline": "skip"}
    assert dead == [({"service": "s", "src": "f", "off": 103, "logline": "boom"}, "plugin batchy raised ValueError")]


@pytest.mark.parametrize("poison", ["raise", "short"])
def test_a_batch_that_raises_or_miscounts_is_done_again_line_by_line(tmp_path: Path, poison: str) -> None:
    """parse_batch raising, or giving the wrong number of results: each line then goes through
    parse (made of parse_batch as a run of one), so only the line that is bad is set aside."""
    by_run, by_item = _both_ways(tmp_path, ["dl", poison, "dx"])
    pushes, dead, count = _summary(by_run)
    assert (pushes, dead, count) == _summary(by_item) and count == 3
    assert [r["word"] for r in pushes["a"]] == ["dl", "dx"]
    if poison == "raise":  # alone, it raises again: dead-lettered
        assert [(item["logline"], why) for item, why in dead] == [("raise", "plugin batchy raised RuntimeError")]
    else:  # alone, it is "not for me"
        assert dead == [] and [r["logline"] for r in pushes["rest"]] == ["short"]


def test_a_hanging_batch_is_cut_off_and_its_lines_each_get_the_limit(tmp_path: Path) -> None:
    (tmp_path / "slowbatch.py").write_text(
        "import time\n"
        "def parse_batch(lines):\n"
        "    if 'hang' in lines:\n"
        "        time.sleep(60)\n"
        "    return [{'ok': True} for _ in lines]\n"
    )
    process = make_processor(plugin_mod.load("slowbatch", [tmp_path]),
                             _parser_opts(pushto=("a",), plugin_timeout_s=0.2), "w")
    started = time.monotonic()
    outcome = process([message.Run("s", "f", 0, ["fine", "hang", "fine too"])], "in")
    assert time.monotonic() - started < 5
    assert len(outcome.dead) == 1 and "longer than 0.2s" in orjson.loads(outcome.dead[0])["reason"]
    assert [r["logline"] for r in orjson.loads(outcome.pushes[0][1])] == ["fine", "fine too"]


def test_builtin_batch_parsers_agree_with_their_line_parsers() -> None:
    """accesslog's parse_batch over a real log (with lines it cannot read among them) gives
    exactly the records and dead letters of its parse, line by line (kontext too)."""
    for name, log in (("accesslog", list(genlog.lines(3000, seed=7))),
                      ("repository", list(genlog.lines(300, seed=8))),
                      ("kontext", list(genlog.kontext_lines(3000, seed=7)))):
        lines = log + ["not a line of it", ADVERSARIAL[0][:500],
                       '1.1.1.1 - - [01/Feb/2025:00:00:01 +0000] "GET / HTTP/1.1" 200 99999999999999999999 "-" "x"']
        loaded = plugin_mod.load(name, options={"timezone": "Europe/Prague"} if name == "kontext" else None)
        assert loaded.parse_batch is not None, name
        process = make_processor(loaded, _parser_opts(other_queue="rest"), "w")
        run = message.Run("s", "f", 0, lines)
        assert _summary(process([run], "in")) == _summary(process(run.items(), "in"))
