from pathlib import Path

from pipeline import plugin

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_readme_example_plugin() -> None:
    loaded = plugin.load("example_status", [PLUGINS])
    ok = '1.2.3.4 - - [01/Feb/2025:00:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "UA"'
    err = '1.2.3.4 - - [01/Feb/2025:00:00:01 +0000] "GET /b?x=1 HTTP/1.1" 503 5 "-" "UA"'
    assert loaded.parse({"logline": ok}) is None
    assert loaded.parse({"logline": err}) == {"client": "1.2.3.4", "path": "/b?x=1", "status": 503}
