"""``faceapp bench --quick`` produces every stable key (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import pytest

from faceapp.bench import (
    LAUNCH_T0_ENV,
    QUICK_STARTUP_TEMPLATES,
    STARTUP_STAGES,
    process_start_time,
    run_bench,
)
from faceapp.bench.frame import PAGE_KEYS, _compare
from faceapp.bench.startup import _stages
from faceapp.cli import main
from faceapp.services.live import FrameResult, LiveFace, StageTimes

STABLE_KEYS = {
    "frame": [
        "fps", "latency_ms_p50", "latency_ms_p95",
        "baseline_fps", "baseline_latency_ms_p50", "baseline_latency_ms_p95",
        "fps_ratio", "latency_p95_ratio", "capacity_fps", "baseline_capacity_fps",
        "frames", "processed", "dropped", "baseline_processed", "new_face_latency_ms_p50",
        "face_recall_vs_baseline", "decision_agreement_vs_baseline", "stages_ms_mean",
    ],
    "embed": [
        "per_s_b1", "per_s_b32", "baseline_per_s_b1", "baseline_per_s_b32", "ratio_b1", "ratio_b32",
    ],
    "gallery": [
        "search_ms_1e4", "search_ms_1e5", "search_ms_1e6",
        "baseline_search_ms_1e4", "baseline_search_ms_1e5", "baseline_search_ms_1e6",
        "ratio_1e4", "ratio_1e5", "ratio_1e6", "open_s_1e5", "open_s_1e6",
    ],
    "machine": ["cpu", "cores", "usable_cores", "torch_threads", "versions"],
    "startup": [
        "window_s_1e5", "ready_s_1e5", "first_paint_s_1e5", "window_shown_s_1e5", "cpu_s_1e5",
        "ready_cpu_s_1e5", "first_launch_s_1e5", "window_s_empty", "ready_s_empty", "first_paint_s_empty",
        "window_shown_s_empty", "cpu_s_empty", "target_s",
    ],
}


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _plain(x, path="result") -> list[str]:
    """Paths of values that are not plain JSON (dict with str keys, list, str, bool, None,
    finite int/float): what ``json.dumps`` with ``default=str`` would have hidden."""
    if isinstance(x, dict):
        return [p for k, v in x.items() for p in
                ([f"{path}: key {k!r}"] if not isinstance(k, str) else _plain(v, f"{path}.{k}"))]
    if isinstance(x, list):
        return [p for i, v in enumerate(x) for p in _plain(v, f"{path}[{i}]")]
    if x is None or isinstance(x, str | bool):
        return []
    if isinstance(x, int | float) and not isinstance(x, bool):
        return [] if math.isfinite(x) or x != x else [f"{path}: {x}"]  # NaN marks 'not measured'
    return [f"{path}: {type(x).__name__}"]


def _assert_json_ready(result) -> None:
    assert _plain(result) == []
    text = json.dumps(result, allow_nan=True)  # no default=: anything else would raise
    back = json.loads(text)
    assert set(back) == set(result) and json.dumps(back, allow_nan=True) == text


def test_quick_bench_produces_every_key(small_model_path, hamilton_clip):
    result = run_bench(
        ("frame", "embed", "gallery"),
        model_path=small_model_path,
        videos=[hamilton_clip],
        quick=True,
        max_frames=12,
    )
    assert result["quick"] is True and result["schema"] == 1
    for part, keys in STABLE_KEYS.items():
        if part == "startup":
            continue  # test_quick_startup_bench_launches_the_app
        missing = [k for k in keys if k not in result[part]]
        assert not missing, f"{part}: missing {missing}"
    frame, embed, gallery = result["frame"], result["embed"], result["gallery"]
    for key in STABLE_KEYS["frame"][:10]:
        assert _positive(frame[key]), key
    for key in STABLE_KEYS["embed"] + STABLE_KEYS["gallery"]:
        assert _positive((embed | gallery)[key]), key
    assert frame["frames"] == 12 and frame["processed"] + frame["dropped"] == 12
    assert 1 <= frame["baseline_processed"] <= 12 and len(frame["videos"]) == 1
    assert frame["fps_ratio"] == pytest.approx(frame["fps"] / frame["baseline_fps"], rel=0.05)
    assert 0.0 <= frame["face_recall_vs_baseline"] <= 1.0
    assert frame["gallery_people"] >= 2
    # recognition takes the app's 1:K τ for the gallery's size, Verify the 1:1 τ (never looser)
    assert frame["threshold"] >= frame["verify_threshold"]
    if frame["threshold_source"] != "calibration":  # no calibration file: one measured τ for both
        assert frame["threshold"] == frame["verify_threshold"]
    assert set(frame["pages"]) == {"recognize", "enroll", "verify"}
    for name, page in frame["pages"].items():
        missing = [k for k in PAGE_KEYS if k not in page]
        assert not missing, f"frame.pages.{name}: missing {missing}"
        assert page["frames"] == 12 and 1 <= page["processed"] <= 12, name
        assert page["processed"] + page["dropped"] == 12, name
        assert _positive(page["fps"]) and page["capacity_fps"] >= page["fps"] * 0.999, name
        assert page["latency_ms_p50"] <= page["latency_ms_p95"] <= page["latency_ms_max"], name
    recognize = frame["pages"]["recognize"]
    assert (recognize["fps"], recognize["capacity_fps"], recognize["latency_ms_p95"]) == (
        frame["fps"], frame["capacity_fps"], frame["latency_ms_p95"])  # the live loop above
    enroll, verify = frame["pages"]["enroll"], frame["pages"]["verify"]
    assert 0 <= enroll["enrolments"] * 5 <= enroll["samples"] <= enroll["processed"]
    assert 0 <= verify["matched"] <= verify["scored"] <= verify["processed"]
    assert embed["per_s_b32"] > 0 and embed["model"]["input_size"] == 64
    assert gallery["same_top_k_as_baseline"] is True
    assert sorted(gallery["templates"]) == ["1e4", "1e5", "1e6"]
    for key in ("1e4", "1e5", "1e6"):
        assert gallery[f"ratio_{key}"] == pytest.approx(
            gallery[f"baseline_search_ms_{key}"] / gallery[f"search_ms_{key}"], rel=0.05, abs=0.01)
        assert 1 <= gallery[f"rows_reranked_{key}"] <= gallery["templates"][key]
        assert gallery[f"backend_{key}"]
    assert {"exact", "numpy-int8"} <= set(gallery["backends"])
    assert gallery["data"].startswith(("LFW-like", "random"))
    _assert_json_ready(result)


def test_cli_bench_gallery_json(capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "gallery", "--quick", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert set(STABLE_KEYS["gallery"]) <= set(printed["gallery"])
    assert "frame" not in printed and "embed" not in printed
    assert printed["machine"]["usable_cores"] >= 1


def test_cli_bench_summary_and_missing_model(capsys, tmp_path):
    assert main(["bench", "embed", "--quick", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err


def face(box, person):
    return LiveFace(1, box, ((0.0, 0.0),) * 5, 1.0, person, 0.5, 0.3, (), False, 1, True)


def test_compare_counts_recall_and_agreement_by_hand():
    t = StageTimes()
    ours = [
        FrameResult(1, (face((0, 0, 10, 10), "a"),), True, 1, t),
        FrameResult(2, (face((0, 0, 10, 10), None), face((50, 50, 60, 60), "b")), False, 0, t),
    ]
    base = [
        FrameResult(1, (face((1, 0, 11, 10), "a"), face((100, 100, 110, 110), "c")), True, 2, t),
        FrameResult(2, (face((0, 1, 10, 11), "a"), face((50, 50, 60, 60), "b")), True, 2, t),
    ]
    recall, agreement = _compare(ours, base)
    assert recall == pytest.approx(3 / 4, abs=1e-4)  # the face at (100, 100) was not reported
    assert agreement == pytest.approx(2 / 3, abs=1e-4)  # frame 2's first face: Unknown vs "a"


@pytest.mark.slow
def test_quick_startup_bench_launches_the_app(small_model_path):
    """Two real launches of ``faceapp gui --exit-when-ready`` (empty and small gallery):
    about 10 s each on a small machine (importing torch dominates)."""
    result = run_bench(("startup",), model_path=small_model_path, quick=True)
    st = result["startup"]
    assert not [k for k in STABLE_KEYS["startup"] if k not in st]
    for key in STABLE_KEYS["startup"]:
        assert _positive(st[key]), key
    n = st["templates"]["1e5"]
    assert n == QUICK_STARTUP_TEMPLATES and st["launches"] == 1
    # the child really loaded the gallery that was built: index size, People page totals
    assert st["templates_loaded_1e5"] == n and st["templates_listed_1e5"] == n
    assert st["people_listed_1e5"] == st["people_1e5"] == n // 4
    assert st["templates_loaded_empty"] == 0 and st["people_listed_empty"] == 0
    assert st["model_id"] == result["model"]["model_id"]
    for name in ("empty", "1e5"):
        (record,) = st["raw"][name]
        s = record["seconds"]
        assert record["model_id"] == st["model_id"]
        # usable (People listed) first, then ready (model and index loaded)
        assert s["window_shown"] <= s["first_paint"] <= s["usable"] <= s["ready"] <= record["exit_s"]
        assert s["first_paint"] == s["window_paint"]  # no start-up card: the window paints first
        assert s["gallery"] <= s["people"] <= s["usable"] <= s["service"] <= s["ready"]
        assert sum(st[f"stages_s_{name}"].values()) == pytest.approx(s["ready"], abs=0.01)
        assert st[f"ready_s_{name}"] >= st[f"window_s_{name}"]
    assert st["meets_target"] == (st["window_s_1e5"] <= st["target_s"])
    _assert_json_ready(result)


def test_startup_stages_by_hand():
    marks = {"run": 1.0, "preloaded": 1.25, "window_shown": 1.5, "first_paint": 1.6, "gallery": 2.0,
             "people": 2.5, "usable": 2.75, "service": 6.0, "ready": 7.0}
    st = _stages(marks)
    assert list(st) == [name for name, _, _ in STARTUP_STAGES]
    assert st == {"python_qt": 1.0, "preload": 0.25, "window": 0.25, "gallery": 0.5, "people": 0.5,
                  "settle": 0.25, "model": 3.25, "ready": 1.0}
    assert "people" not in _stages({k: v for k, v in marks.items() if k != "people"})


def test_quick_encryption_bench_compares_both_galleries_in_one_run(small_model_path):
    """The small random model: faces are still found by MTCNN on LFW (no timing asserted)."""
    result = run_bench(("encryption",), model_path=small_model_path, quick=True)
    enc = result["encryption"]
    steps = ["open_rows", "open_snapshot", "enroll", "verify", "recognize", "delete", "end_to_end"]
    for step in steps:
        assert _positive(enc[f"ratio_{step}"]), step
        assert enc[f"ratio_{step}"] == round(
            enc["encrypted"][f"{step}_s"] / enc["plain"][f"{step}_s"], 3)
    assert enc["plain"]["encrypted"] is False and enc["encrypted"]["encrypted"] is True
    assert enc["encrypted"]["mode"] == "fields" and enc["sqlcipher_only"]["mode"] == "sqlcipher"
    for step in steps:  # the field encryption's own cost, against SQLCipher alone
        assert enc[f"fields_ratio_{step}"] == round(
            enc["encrypted"][f"{step}_s"] / enc["sqlcipher_only"][f"{step}_s"], 3)
    assert enc["people_enrolled"] >= 1 and enc["templates"] == 2000
    for mode in ("plain", "encrypted"):
        r = enc[mode]
        parts = enc["face_analysis_s"] + sum(
            r[k] for k in ("open_snapshot_s", "enroll_s", "verify_s", "recognize_s"))
        assert abs(r["end_to_end_s"] - parts) < 1e-3
    assert enc["within_target"] == (enc["ratio_end_to_end"] <= enc["target_ratio"])


def test_json_ready_check_can_fail():
    from pathlib import Path

    import numpy as np

    assert _plain({"a": [1, 2.5, None, "x", True], "b": {"c": float("nan")}}) == []
    assert _plain({"p": Path("x")}) == ["result.p: PosixPath"]
    assert _plain({"n": np.float32(1.0)}) == ["result.n: float32"]
    assert _plain({1: 2}) == ["result: key 1"]
    assert _plain({"inf": float("inf")}) == ["result.inf: inf"]


def test_process_start_time(monkeypatch) -> None:
    monkeypatch.setenv(LAUNCH_T0_ENV, "1234.5")
    assert process_start_time() == 1234.5
    monkeypatch.delenv(LAUNCH_T0_ENV)
    t = process_start_time()  # from /proc on Linux: this test process started earlier
    assert t <= time.time()
    if sys.platform.startswith("linux"):
        assert t < time.time() - 0.01


def test_bench_data_folder_comes_from_the_flag_or_the_environment(small_model_path, tmp_path, capsys,
                                                                  monkeypatch):
    """No location of its own: ``--data`` (or ``$FACEAPP_DATA``) is where videos and LFW are looked for."""
    from faceapp.config import DEFAULT_DATA_DIR, ENV_DATA, resolve_paths

    monkeypatch.delenv(ENV_DATA, raising=False)
    assert resolve_paths().data_dir == DEFAULT_DATA_DIR
    monkeypatch.setenv(ENV_DATA, str(tmp_path / "env"))
    assert resolve_paths().data_dir == tmp_path / "env"
    assert resolve_paths(data=tmp_path / "flag").data_dir == tmp_path / "flag"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "frame", "--quick", "--model", str(small_model_path), "--data", str(empty)]) == 2
    assert f"none in {empty / 'face_videos'}" in capsys.readouterr().err
    assert main(["bench", "encryption", "--quick", "--model", str(small_model_path)]) == 2  # from the env
    assert "env/lfw" in capsys.readouterr().err


def test_fill_gallery_writes_through_the_repository(tmp_path):
    """People and templates of a synthetic gallery read back through the gallery's own API;
    a gallery that is not empty is refused."""
    from faceapp.bench import fill_gallery, synthetic_gallery
    from faceapp.errors import GalleryError
    from faceapp.gallery import GalleryRepository, open_database, read_session

    emb, pids = synthetic_gallery(10, 8, 4, 0)
    engine = open_database(f"sqlite:///{tmp_path / 'g.sqlite'}")
    try:
        person_ids = fill_gallery(engine, emb, pids, "m", name="p")
        with read_session(engine) as s:
            repo = GalleryRepository(s)
            people = repo.people()
            rows = repo.index_rows("m")
        listed = [(p.name, p.n_templates) for p in people]
        assert listed == [("p 0000000", 4), ("p 0000001", 4), ("p 0000002", 2)]
        by_name = {p.name: p.id for p in people}
        assert person_ids.tolist() == [by_name[f"p {i:07d}"] for i in pids]
        assert rows.person_ids.tolist() == person_ids.tolist()
        assert np.allclose(rows.embeddings, emb)
        with pytest.raises(GalleryError, match="empty"):
            fill_gallery(engine, emb, pids, "m")
    finally:
        engine.dispose()


def test_startup_marks_need_neither_qt_nor_numpy():
    """The GUI imports the Qt-free half of the start-up probe at launch: it must stay light."""
    import subprocess

    code = ("import sys, faceapp.bench.startup_marks; "
            "print(sorted(m for m in ('numpy', 'torch', 'sqlalchemy', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_startup_marks_record_by_hand():
    import io

    from faceapp.bench import StartupMarks

    class Service:
        model_id = "m1"

        def load_index(self):
            return 7

    class Row:
        n_templates = 3

    marks = StartupMarks(time.time() - 1.0)
    first = marks.mark("run")
    assert marks.mark("run") == first and "run" in marks and first >= 1.0
    marks.mark_paint("window_paint")
    marks.mark_paint("other_paint")  # not the first paint any more
    assert marks.marks["first_paint"] == marks.marks["window_paint"]
    assert marks.cpu["first_paint"] == marks.cpu["window_paint"]
    marks.note_service(Service(), [Row(), Row()], has_model=True)
    out = io.StringIO()
    marks.write(out, 0)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)["startup"]
    assert record["exit_code"] == 0 and record["model_id"] == "m1"
    assert record["templates_listed"] == 6 and record["templates_loaded"] == 7
    names = {"run", "window_paint", "other_paint", "first_paint"}
    assert set(record["seconds"]) == set(record["cpu_s"]) == names


def test_every_throw_away_gallery_gets_the_bench_passphrase(small_model_path, monkeypatch):
    """Without a keyring or $FACEAPP_PASSPHRASE, `faceapp bench frame` failed on its own
    temporary gallery ("needs a passphrase"): each part that makes one runs with a
    throw-away passphrase and the keyring off, and the environment is restored."""
    import os

    import faceapp.bench.report as report

    seen = {}

    def fake(part):
        def run(*args, **kwargs):
            seen[part] = (os.environ.get("FACEAPP_PASSPHRASE"), os.environ.get("FACEAPP_KEYRING"))
            return {}
        return run

    parts = {"frame": "bench_frame", "gallery": "bench_gallery_part", "startup": "bench_startup"}
    for part, name in parts.items():
        monkeypatch.setattr(report, name, fake(part))
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    monkeypatch.setenv("FACEAPP_KEYRING", "on")
    run_bench(("frame", "gallery", "startup"), model_path=small_model_path, quick=True)
    assert set(seen) == {"frame", "gallery", "startup"}
    assert all(passphrase and keyring == "off" for passphrase, keyring in seen.values())
    assert "FACEAPP_PASSPHRASE" not in os.environ and os.environ["FACEAPP_KEYRING"] == "on"
