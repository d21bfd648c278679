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
