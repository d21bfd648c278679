"""Encrypted export bundles: nothing in clear, integrity checked, a wrong passphrase or any
modified byte refused with one line and nothing imported."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from fakes import enroll_three, img, make_service

from faceapp.cli import gallery_cmds, main
from faceapp.errors import GalleryError, WrongPassphrase
from faceapp.gallery.bundle import BUNDLE_MAGIC, open_bundle, seal_bundle
from faceapp.gallery.crypto import KdfParams

PW = "bundle passphrase"


@pytest.fixture
def exported(tmp_path):
    svc = make_service(f"sqlite:///{tmp_path / 'a.sqlite'}")
    enroll_three(svc)
    path = tmp_path / "g.faceapp"
    assert svc.export_gallery(path, passphrase=PW).templates == 6
    crops = [t.crop_png for t in svc.person_templates("Ann")]
    svc.close()
    return path, crops


def new_service(tmp_path, name="b.sqlite"):
    return make_service(f"sqlite:///{tmp_path / name}")


def test_bundle_holds_nothing_in_clear_and_round_trips(exported, tmp_path):
    path, crops = exported
    data = path.read_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert data.startswith(BUNDLE_MAGIC)
    for needle in (b"\x89PNG", b"Ann", b"people", b"embedding", crops[0][-32:]):
        assert needle not in data
    other = new_service(tmp_path)
    try:
        t = other.import_gallery(path, passphrase=PW)
        assert (t.people, t.templates) == (3, 6)
        assert [x.crop_png for x in other.person_templates("Ann")] == crops
        assert other.recognize(img((2, 1)))[0].person == "Bob"
    finally:
        other.close()


def test_every_modified_byte_is_refused_nothing_imported(exported, tmp_path):
    path, _ = exported
    data = path.read_bytes()
    header_end = data.index(b"\n", len(BUNDLE_MAGIC))
    rng = np.random.default_rng(0)
    # bytes of the magic line, of the header, the nonce, the ciphertext and the tag
    spots = sorted({0, len(BUNDLE_MAGIC) + 2, header_end - 3, header_end + 20,
                    *rng.integers(header_end + 40, len(data) - 20, 6).tolist(),
                    len(data) - 1})
    other = new_service(tmp_path)
    try:
        for i in spots:
            bad = bytearray(data)
            bad[i] ^= 0x04
            path.write_bytes(bytes(bad))
            with pytest.raises(GalleryError):
                other.import_gallery(path, passphrase=PW)
        path.write_bytes(data[:-100])  # truncated
        with pytest.raises(WrongPassphrase, match="modified"):
            other.import_gallery(path, passphrase=PW)
        path.write_bytes(data)
        with pytest.raises(WrongPassphrase, match="wrong passphrase"):
            other.import_gallery(path, passphrase="not it")
        assert other.list_people() == []
    finally:
        other.close()


def test_cli_export_import_and_one_line_refusals(exported, tmp_path, monkeypatch, capsys):
    path, _ = exported
    db = tmp_path / "c.sqlite"
    monkeypatch.setattr(gallery_cmds.FaceService, "open",
                        classmethod(lambda cls, *a, **k: make_service(f"sqlite:///{db}")))
    monkeypatch.setenv("FACEAPP_EXPORT_PASSPHRASE", "not it")
    assert main(["people", "import", str(path), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "wrong passphrase" in err and err.count("\n") == 1
    bad = bytearray(path.read_bytes())
    bad[-5] ^= 1
    modified = tmp_path / "modified.faceapp"
    modified.write_bytes(bytes(bad))
    monkeypatch.setenv("FACEAPP_EXPORT_PASSPHRASE", PW)
    assert main(["people", "import", str(modified), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "integrity check failed" in err and err.count("\n") == 1
    assert main(["people", "import", str(path), "--db", str(db)]) == 0
    assert "imported 3 new people" in capsys.readouterr().out
    out = tmp_path / "again.faceapp"
    assert main(["people", "export", str(out), "--db", str(db)]) == 0
    assert open_bundle(out.read_bytes(), PW)  # the CLI's bundle opens with the env passphrase
    monkeypatch.delenv("FACEAPP_EXPORT_PASSPHRASE")
    assert main(["people", "export", str(out), "--db", str(db)]) == 2
    assert "FACEAPP_EXPORT_PASSPHRASE" in capsys.readouterr().err


def test_plaintext_export_only_with_allow_plaintext(tmp_path):
    legacy = tmp_path / "old.json"
    legacy.write_bytes(b'{"format": "faceapp-gallery", "version": 1, "people": []}')
    svc = new_service(tmp_path)
    try:
        with pytest.raises(GalleryError, match="allow-plaintext"):
            svc.import_gallery(legacy, passphrase=PW)
        assert svc.import_gallery(legacy, passphrase=PW, allow_plaintext=True).people == 0
    finally:
        svc.close()


def test_header_kdf_parameters_are_bounded():
    data = seal_bundle(b"{}", PW, KdfParams.from_env())
    start = len(BUNDLE_MAGIC)
    end = data.index(b"\n", start)
    header = data[start:end].replace(b'"memory_kib":256', b'"memory_kib":99999999')
    with pytest.raises(WrongPassphrase, match="modified"):
        open_bundle(data[:start] + header + data[end:], PW)
