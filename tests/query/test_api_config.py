"""The api worker's section: what `loglines check` and the loader refuse, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.errors import ConfigError

TOKENS = "reader:reader-token-0123456789abcdef\n"
INDEXER = "[worker_es]\ntype = esindexer\nlistento = parsed\nindex = access-%Y.%m.%d\ntemplate = access\n"


def _api(write_cfg, tmp_path: Path, extra: str = "", indexer: str = INDEXER) -> Path:  # type: ignore[no-untyped-def]
    (tmp_path / "tokens").write_text(TOKENS)
    return write_cfg(indexer + "\n[worker_api]\ntype = api\ntokens_file = tokens\n" + extra)


def test_a_good_section_loads_with_its_defaults(write_cfg, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = _api(write_cfg, tmp_path, "esindexer = worker_es\n")
    opts = config.load(cfg).programs["worker_api"].options
    assert (opts.listen, opts.max_range_days, opts.data_type, opts.customer_id) == (
        "127.0.0.1:8515", 400, "Article", "0000000000000000")
    assert main(["-c", str(cfg), "check"]) == 0 and "worker_api" in capsys.readouterr().out


@pytest.mark.parametrize("extra, key", [
    ("platform_id = 9lives\n", "platform_id"), ("data_type = article\n", "data_type"),
    ("access_type = open\n", "access_type"), ("registry_record = https://example.org/x\n", "registry_record"),
    ("institution_ids = 0000000121032683\n", "institution_ids"), ("listen = 8515\n", "listen"),
    ("tls_cert = cert.pem\n", "tls_key"), ("colour = red\n", "colour"),
])
def test_bad_keys_are_named(write_cfg, tmp_path: Path, extra: str, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        config.load(_api(write_cfg, tmp_path, extra))


def test_data_types_are_spelt_as_counter_spells_them(write_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="expected Article"):
        config.load(_api(write_cfg, tmp_path, "data_type = article\n"))


def test_check_names_a_missing_esindexer_and_a_missing_tokens_file(write_cfg, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = _api(write_cfg, tmp_path, "esindexer = worker_nope\n")
    assert main(["-c", str(cfg), "check"]) == 1
    err = capsys.readouterr().err
    assert "section [worker_api], key 'esindexer', value 'worker_nope'" in err and "esindexers: worker_es" in err
    two = _api(write_cfg, tmp_path, "", INDEXER + INDEXER.replace("worker_es", "worker_es2").replace("parsed", "p2"))
    assert main(["-c", str(two), "check"]) == 1
    assert "name the esindexer section to read (worker_es, worker_es2)" in capsys.readouterr().err
    (tmp_path / "tokens").unlink()
    cfg = write_cfg(INDEXER + "\n[worker_api]\ntype = api\ntokens_file = tokens\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "cannot read the tokens file" in capsys.readouterr().err
