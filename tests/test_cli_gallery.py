"""Gallery CLI, in-process through ``faceapp.cli.main``.

Three levels:
* the stand-in pipeline of ``test_services`` behind the real commands (exact results, fast);
* the real MTCNN pipeline with an untrained model saved to a temp file (JSON shape);
* end to end on LFW faces with the shipped ``models/default.pt`` (skipped when absent).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import raw_connect

from faceapp.cli import main
from faceapp.config import PROJECT_ROOT
from faceapp.gallery import open_database
from faceapp.nn.calibration import Calibration, calibration_path_for

VERIFY_KEYS = {"match", "score", "threshold", "scorer", "person"}
FACE_KEYS = {"box", "person", "score", "candidates"}

# held-out LFW identities (peopleDevTest.txt) with many images each
ENROLLED = ("Donald_Rumsfeld", "Gerhard_Schroeder", "Jacques_Chirac", "Jennifer_Capriati")
NEVER_ENROLLED = ("Silvio_Berlusconi", "Vicente_Fox", "Kofi_Annan", "John_Negroponte")


@pytest.fixture
def lfw(lfw_dir: Path) -> Path:
    return lfw_dir


def lfw_images(lfw: Path, person: str, start: int, count: int) -> list[str]:
    return [str(lfw / person / f"{person}_{i:04d}.jpg") for i in range(start, start + count)]


def run_json(capsys, argv: list[str]) -> tuple[int, object]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


# ---------------------------------------------------------------------- stand-in pipeline


def test_cli_flow_with_stand_in_pipeline(fake_cli, capsys, tmp_path):
    db, save = fake_cli
    code, out = run_json(capsys, ["enroll", "Ann", save("a0", (1, 0)), save("a1", (1, 1)),
                                  save("two", (1, 2), (2, 2)), "--db", db])
    assert code == 0
    assert out["person"] == "Ann" and out["templates_added"] == 2
    assert len(out["accepted"]) == 2
    assert out["rejected"][0]["reason"].startswith("2 faces")
    assert main(["enroll", "Bob", save("b0", (2, 0)), "--db", db]) == 0
    capsys.readouterr()

    code, out = run_json(capsys, ["verify", "Ann", save("p1", (1, 5)), "--db", db])
    assert code == 0
    assert set(out) >= VERIFY_KEYS
    assert out["match"] is True and out["person"] == "Ann" and out["threshold"] == 0.6
    assert out["score"] >= out["threshold"] and out["scorer"] == "distance"
    code, out = run_json(capsys, ["verify", "Ann", save("p2", (2, 5)), "--db", db])
    assert code == 1 and out["match"] is False and out["score"] < out["threshold"]
    code, out = run_json(capsys, ["verify", "Ann", save("p3", (1, 5)), "--db", db,
                                  "--threshold", "0.999"])
    assert code == 1 and out["threshold"] == 0.999

    code, out = run_json(capsys, ["recognize", save("r", (1, 6), (7, 0)), "--db", db,
                                  "--top-k", "2"])
    assert code == 0 and isinstance(out, list) and len(out) == 2
    for face in out:
        assert set(face) >= FACE_KEYS
        assert len(face["box"]) == 4
        assert len(face["candidates"]) == 2
    assert out[0]["person"] == "Ann"
    assert out[1]["person"] is None
    assert out[1]["candidates"][0]["score"] == out[1]["score"]

    code, out = run_json(capsys, ["people", "list", "--db", db])
    assert [(p["name"], p["n_templates"]) for p in out] == [("Ann", 2), ("Bob", 1)]
    crops = tmp_path / "crops"
    code, out = run_json(capsys, ["people", "show", "Ann", "--db", db, "--crops", str(crops)])
    assert out["person"] == "Ann" and len(out["templates"]) == 2
    assert len(list(crops.glob("*.png"))) == 2
    assert main(["people", "rename", "Bob", "Robert", "--db", db]) == 0
    export = tmp_path / "g.json"
    assert main(["people", "export", str(export), "--db", db]) == 0
    assert main(["people", "delete", "Robert", "--db", db, "--yes"]) == 0
    capsys.readouterr()
    code, out = run_json(capsys, ["people", "list", "--db", db])
    assert [p["name"] for p in out] == ["Ann"]
    code, out = run_json(capsys, ["people", "import", str(export), "--db", db,
                                  "--on-conflict", "skip"])
    assert out["people"] == 1 and out["skipped"] == ["Ann"]
    code, out = run_json(capsys, ["people", "events", "--db", db, "--limit", "50"])
    kinds = {e["kind"] for e in out}
    assert {"enroll", "verify", "recognize", "rename", "delete", "import"} <= kinds


def test_cli_errors_are_one_line(fake_cli, capsys):
    db, save = fake_cli
    assert main(["verify", "Nobody", save("x", (1, 1)), "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Nobody" in err and err.count("\n") == 1
    assert main(["enroll", "Ann", save("blur", (1, 1, 1)), "--db", db]) == 2
    assert "blurred" in capsys.readouterr().err
    assert main(["people", "delete", "Ann", "--db", db]) == 2  # no --yes, no terminal


def test_cli_refuses_newer_database(tmp_path, capsys):
    path = tmp_path / "new.sqlite"
    open_database(str(path)).dispose()

    con = raw_connect(path)
    con.execute("UPDATE schema_info SET version = version + 1")
    con.commit()
    con.close()
    assert main(["people", "list", "--db", str(path)]) == 2
    assert "newer faceapp" in capsys.readouterr().err


# ---------------------------------------------------------------------- real pipeline
@pytest.fixture
def untrained_model(small_model_path: Path, tmp_path: Path) -> Path:
    """The shared small random model, copied so a calibration file can sit beside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    return Path(shutil.copy(small_model_path, folder / "small.pt"))


@pytest.mark.slow
def test_cli_with_real_pipeline(untrained_model, lfw, tmp_path, capsys, monkeypatch):
    from faceapp.nn.pipeline import FacePipeline

    # each command loads MTCNN and the model; load them once for the whole test
    loaded: dict[tuple[str, str], FacePipeline] = {}
    real_from_paths = FacePipeline.from_paths.__func__

    def cached(cls, model_path, device="cpu", **kw):
        key = (str(model_path), device)
        if key not in loaded:
            loaded[key] = real_from_paths(cls, model_path, device, **kw)
        return loaded[key]

    monkeypatch.setattr(FacePipeline, "from_paths", classmethod(cached))
    db = str(tmp_path / "real.sqlite")
    model = ["--model", str(untrained_model), "--db", db]
    code, out = run_json(capsys, ["enroll", "Tony Blair",
                                  *lfw_images(lfw, "Tony_Blair", 1, 2), "--largest", *model])
    assert code == 0 and out["templates_added"] == 2, out

    # no calibration beside this model: τ must be given
    assert main(["verify", "Tony Blair", lfw_images(lfw, "Tony_Blair", 3, 1)[0], *model]) == 2
    assert "calibration" in capsys.readouterr().err
    code, out = run_json(capsys, ["verify", "Tony Blair", lfw_images(lfw, "Tony_Blair", 3, 1)[0],
                                  *model, "--threshold", "0.5"])
    assert set(out) >= VERIFY_KEYS
    assert out["match"] == (out["score"] >= 0.5) and code == (0 if out["match"] else 1)

    # with a calibration file, its τ applies
    from faceapp.nn.checkpoint import load_checkpoint

    cal = Calibration(load_checkpoint(untrained_model).model_id,
                      scorers={"distance": {"far_0.01": 2.0}})  # above any cosine: all Unknown
    cal.save(calibration_path_for(untrained_model))
    code, out = run_json(capsys, ["recognize", lfw_images(lfw, "Tony_Blair", 4, 1)[0], *model])
    assert code == 0 and len(out) >= 1
    face = out[0]
    assert set(face) >= FACE_KEYS
    assert face["person"] is None and face["threshold"] == 2.0
    assert face["candidates"][0]["person"] == "Tony Blair"


# ---------------------------------------------------------------------- end to end
@pytest.fixture(params=["sqlite", "postgresql"])
def e2e_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The end-to-end gallery: a SQLite file, then a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "e2e.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.mark.slow
def test_end_to_end_on_lfw_with_default_model(lfw, e2e_db, capsys):
    model_path = PROJECT_ROOT / "models" / "default.pt"
    if not model_path.is_file():
        pytest.skip("models/default.pt is not shipped in this checkout (trained model needed)")
    db = e2e_db
    common = ["--db", db, "--model", str(model_path)]
    for person in ENROLLED:
        code, out = run_json(capsys, ["enroll", person.replace("_", " "),
                                      *lfw_images(lfw, person, 1, 3), "--largest", *common])
        assert code == 0 and out["templates_added"] >= 2, out

    correct = wrong = 0
    for person in ENROLLED:
        for probe in lfw_images(lfw, person, 10, 2):
            code, out = run_json(capsys, ["recognize", probe, *common])
            assert code == 0 and out
            main_face = max(out, key=lambda f: (f["box"][2] - f["box"][0]) *
                            (f["box"][3] - f["box"][1]))
            if main_face["person"] == person.replace("_", " "):
                correct += 1
            elif main_face["person"] is not None:
                wrong += 1
    rejected = 0
    for person in NEVER_ENROLLED:
        code, out = run_json(capsys, ["recognize", lfw_images(lfw, person, 1, 1)[0], *common])
        main_face = max(out, key=lambda f: (f["box"][2] - f["box"][0]) *
                        (f["box"][3] - f["box"][1]))
        rejected += main_face["person"] is None
    # 8 probes of enrolled people, 4 of strangers; 1:K τ for 4 people: the calibrated FAR 1e-3
    assert correct >= 6, (correct, wrong)
    assert wrong <= 1, (correct, wrong)
    assert rejected >= 3, rejected

    code, out = run_json(capsys, ["verify", "Jacques Chirac",
                                  lfw_images(lfw, "Jacques_Chirac", 20, 1)[0], *common])
    assert out["match"] is True
    code, out = run_json(capsys, ["verify", "Jacques Chirac",
                                  lfw_images(lfw, "Kofi_Annan", 2, 1)[0], *common])
    assert out["match"] is False and code == 1
