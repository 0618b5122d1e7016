"""The trust boundary's parts (mess_core.models.trust): this machine's signature, the consent rule, and what a study
may name; the study, CLI and app behaviour is in tests/engine/study/test_own_model.py."""

import stat

import pytest

from mess_core.models import ModelSource
from mess_core.models.trust import (
    KEY_ENV,
    UntrustedCodeError,
    check_study_source,
    key_path,
    require_consent,
    sign,
    signed_here,
)

FILE = ModelSource("file", "/work/model.py", "Net", "a" * 64)


def test_a_record_signed_here_is_trusted_here_and_nowhere_else(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "here.key"))
    signature = sign(FILE)
    assert signature and signed_here(FILE, signature)
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600  # only this user may sign
    assert sign(FILE) == signature  # the key is made once
    edited = ModelSource("file", "/work/model.py", "Net", "b" * 64)
    assert not signed_here(edited, signature)
    assert not signed_here(FILE, None) and not signed_here(FILE, 12)
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "elsewhere.key"))
    assert not signed_here(FILE, signature)
    assert not (tmp_path / "elsewhere.key").exists()  # checking never makes a key


def test_registered_models_need_no_signature_and_no_key(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "k" / "trust.key"))
    source = ModelSource.parse("mobilenetv2_fcn")
    assert sign(source) is None and not (tmp_path / "k").exists()
    require_consent(source, signature=None, consent=False, where="m.pt: model_source")


def test_without_a_writable_key_records_stay_unsigned_and_ask_for_consent(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "file" / "trust.key"))  # a folder that cannot exist
    assert sign(FILE) is None
    with pytest.raises(
        UntrustedCodeError,
        match=r"m.pt: model_source: building this model runs the Python file "
        r"/work/model.py, SHA-256 aaaaaaaaaaaaaaaa\.\.\. .*--trust-model-code",
    ):
        require_consent(FILE, signature=None, consent=False, where="m.pt: model_source")
    require_consent(FILE, signature=None, consent=True, where="m.pt: model_source")


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "registry", "target": "mobilenetv2_fcn"},
        {"kind": "import", "target": "torchvision.models.segmentation", "attr": "fcn_resnet50"},
        {"kind": "file", "target": "net.py", "attr": "Net", "sha256": "0" * 64},
    ],
)
def test_what_a_study_may_name(record):
    check_study_source(record, where="manifest.json: model_source")


@pytest.mark.parametrize(
    "record",
    [
        None,
        "mobilenetv2_fcn",
        {"kind": "file", "target": "net.py", "attr": "Net", "sha256": "not-hex"},
        {"kind": "file", "target": "sub/net.py", "attr": "Net", "sha256": "0" * 64},
        {"kind": "file", "target": "net.txt", "attr": "Net", "sha256": "0" * 64},
        {"kind": "import", "target": "torchvision", "attr": "not a name"},
        {"kind": "import", "target": "subprocess", "attr": "run"},
        {"kind": "import", "target": "torchvision..x", "attr": "f"},
    ],
)
def test_what_a_study_may_not_name(record):
    with pytest.raises(UntrustedCodeError, match="manifest.json: model_source: "):
        check_study_source(record, where="manifest.json: model_source")


def test_an_empty_or_cut_key_file_is_no_key_and_signs_nothing(monkeypatch, tmp_path):
    key = tmp_path / "trust.key"
    key.write_text("")
    monkeypatch.setenv(KEY_ENV, str(key))
    import hashlib
    import hmac
    import json

    forged = hmac.new(b"", json.dumps(FILE.to_dict(), sort_keys=True).encode(), hashlib.sha256).hexdigest()
    assert not signed_here(FILE, forged)
    key.write_text("ab" * 8)  # 8 bytes: cut short
    assert sign(FILE) is None and not signed_here(FILE, forged)
