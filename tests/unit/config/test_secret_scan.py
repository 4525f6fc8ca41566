"""The secret scan itself: it must find a leak, name the file and secret, and skip secret files.

Its fixtures use a secret of their own, not one of the run's: the session-wide scan must not
find these deliberate leaks."""

from tests.secret_scan import SECRETS, leaks, scan_files

FAKE = {"demo": "demo-secret-0f1e2d3c4b5a"}


def test_a_leak_is_found_by_name():
    assert leaks(f"refused key {FAKE['demo']} for web", FAKE) == ["demo"]
    assert leaks("refused key demo-secret-... for web", FAKE) == []
    assert leaks(f"ok {SECRETS['storefront'][:-1]}") == []


def test_files_are_scanned_and_secret_files_skipped(tmp_path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "serve.log").write_text(f"error: bad {FAKE['demo']}\n")
    (tmp_path / "svc" / "audit.jsonl").write_text('{"subject": "carol"}\n')
    (tmp_path / "api-keys").write_text(f"{FAKE['demo']}:carol:analyst\n")
    (tmp_path / "model.pkl").write_bytes(FAKE["demo"].encode())  # not a log
    assert scan_files([tmp_path, tmp_path / "missing"], FAKE) == {
        str(tmp_path / "svc" / "serve.log"): ["demo"]
    }
