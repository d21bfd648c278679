"""The live loop's in-memory matcher: answers from the service's index cache, hears about this
service's gallery changes, and leaves no listener behind when it closes."""

from __future__ import annotations

from fakes import FakePipeline, img, make_service

from faceapp.services.live import CacheMatcher


def test_cache_matcher_follows_changes_and_unsubscribes(tmp_path) -> None:
    pipeline = FakePipeline()
    svc = make_service(f"sqlite:///{tmp_path / 'g.sqlite'}", pipeline)
    try:
        svc.enroll("Ann", [img((1, 0))])
        cache = svc.core.cache
        before = len(cache._listeners)
        matcher = CacheMatcher(svc)
        assert len(cache._listeners) == before + 1
        assert matcher.match(pipeline.analyze(img((1, 2))))[0].person == "Ann"
        assert not matcher.take_changes()  # the first batch loaded the view itself
        svc.enroll("Bob", [img((2, 0))])  # applied to the cache in place
        assert matcher.take_changes() and not matcher.take_changes()
        assert matcher.match(pipeline.analyze(img((2, 2))))[0].person == "Bob"
        matcher.close()
        assert len(cache._listeners) == before
        assert matcher.take_changes()  # used again after close: decide again, follow again
        assert len(cache._listeners) == before + 1
        matcher.close()
    finally:
        svc.close()


def test_cache_matcher_threshold_follows_the_gallery_size_without_sql(tmp_path) -> None:
    """τ of the live loop: far_0.01's before any view and with 1 person, far_0.001's with 2-10,
    far_0.0001's with 11 — read from the cache's latest view, no SQL statement per read; a
    change made by another desktop arrives through the background check; the user's τ wins."""
    import time

    from sqlalchemy import event

    from faceapp.nn.calibration import Calibration

    pipeline = FakePipeline()
    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    cal = Calibration(pipeline.model_id,
                      {"distance": {"far_0.01": 0.5, "far_0.001": 0.6, "far_0.0001": 0.7}})
    svc = make_service(url, pipeline, cal)
    other = make_service(url, FakePipeline(), cal)
    statements: list[str] = []
    event.listen(svc.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: statements.append(sql))
    matcher = CacheMatcher(svc, refresh_s=0.0)
    try:
        svc.threshold()  # the calibration's τ read once (the stored-τ lookup), then in memory
        statements.clear()
        assert matcher.threshold() == 0.5 and statements == []  # no view yet: the 1:1 τ
        svc.enroll("Ann", [img((1, 0))])
        ann = pipeline.analyze(img((1, 2)))
        result = matcher.match(ann)[0]  # loads the view: 1 person
        assert (result.person, result.threshold) == ("Ann", 0.5)
        svc.enroll("Bob", [img((2, 0))])  # applied to the view in place: 2 people
        statements.clear()
        assert matcher.threshold() == 0.6 and statements == []
        assert matcher.match(ann)[0].threshold == 0.6
        for person in range(3, 12):
            svc.enroll(f"P{person}", [img((person, 0))])
        statements.clear()
        assert [matcher.threshold() for _ in range(100)] == [0.7] * 100 and statements == []
        assert matcher.take_changes()  # the live loop re-decides its tracks
        # another desktop deletes 10 people: the background check brings 1 person back
        for person in range(2, 12):
            other.delete_person("Bob" if person == 2 else f"P{person}")
        deadline = time.monotonic() + 30
        while matcher.threshold() != 0.5 and time.monotonic() < deadline:
            matcher.match(ann)
            time.sleep(0.01)
        assert matcher.threshold() == 0.5 and matcher.match(ann)[0].threshold == 0.5
        svc.use_threshold("distance", 0.65)  # the user's τ wins over the gallery size
        assert matcher.threshold() == 0.65 and matcher.match(ann)[0].threshold == 0.65
        fixed = CacheMatcher(svc, threshold=0.2)
        assert fixed.threshold() == 0.2 and fixed.match(ann)[0].threshold == 0.2
        fixed.close()
    finally:
        matcher.close()
        other.close()
        svc.close()
