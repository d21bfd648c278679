"""The GUI asks for the gallery passphrase once, in a password dialog, when there is no OS
keyring and no $FACEAPP_PASSPHRASE; the workers that open the gallery get it from there."""

from __future__ import annotations

import os

import pytest
from PySide6.QtWidgets import QInputDialog, QLineEdit

from faceapp.errors import WrongPassphrase
from faceapp.gui.app import ask_gallery_passphrase
from faceapp.services import FaceService, gallery_passphrase_needed

pytestmark = pytest.mark.gui


def answer(monkeypatch, *replies: str):
    asked: list[tuple[str, object]] = []
    queue = list(replies)

    def get_text(parent, title, label, echo=None, *a, **k):
        asked.append((label, echo))
        return queue.pop(0), True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    return asked


def test_passphrase_dialog_unlocks_the_gallery(qapp, tmp_path, monkeypatch):
    db = str(tmp_path / "g.sqlite")
    FaceService.open(db, load_model=False).close()  # made with the suite's passphrase
    assert gallery_passphrase_needed(db) == "none"  # $FACEAPP_PASSPHRASE is set
    passphrase = os.environ["FACEAPP_PASSPHRASE"]
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    assert gallery_passphrase_needed(db) == "unlock"
    asked = answer(monkeypatch, passphrase)
    prompt = ask_gallery_passphrase(db)
    assert prompt is not None and len(asked) == 1
    assert asked[0][1] == QLineEdit.EchoMode.Password
    with FaceService.open(db, load_model=False, key_prompt=prompt) as svc:
        assert svc.list_people() == []
    answer(monkeypatch, "wrong")
    with pytest.raises(WrongPassphrase):
        FaceService.open(db, load_model=False, key_prompt=ask_gallery_passphrase(db))


def test_new_gallery_passphrase_is_asked_twice(qapp, tmp_path, monkeypatch):
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    db = str(tmp_path / "new.sqlite")
    assert gallery_passphrase_needed(db) == "new"
    asked = answer(monkeypatch, "chosen", "chosen")
    prompt = ask_gallery_passphrase(db)
    assert prompt is not None and len(asked) == 2
    FaceService.open(db, load_model=False, key_prompt=prompt).close()
    assert gallery_passphrase_needed(db) == "unlock"
    answer(monkeypatch, "one", "other")  # the two differ: nothing to open with
    assert ask_gallery_passphrase(str(tmp_path / "other.sqlite")) is None


def test_the_typed_passphrase_follows_a_key_rotation(qapp, tmp_path, monkeypatch):
    """What `faceapp gui` does: the Privacy page's ``passphraseChanged`` updates the prompt
    that the workers reopening the gallery use."""
    from faceapp.gui.context import AppContext
    from faceapp.gui.settings import GuiSettings

    db = str(tmp_path / "g.sqlite")
    FaceService.open(db, load_model=False).close()
    passphrase = os.environ["FACEAPP_PASSPHRASE"]
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    answer(monkeypatch, passphrase)
    prompt = ask_gallery_passphrase(db)
    ctx = AppContext(GuiSettings())
    ctx.passphraseChanged.connect(prompt.set)
    ctx.passphraseChanged.emit("rotated")
    assert prompt("passphrase of the gallery", False) == "rotated"
