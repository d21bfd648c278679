"""``faceapp audit [--since WHEN] [--action A] [--limit N]`` and ``faceapp audit verify``.

The gallery's hash-chained audit log (:mod:`faceapp.gallery.audit`): who did what when,
with no biometric data. ``verify`` exits 0 when the chain is intact, 1 when it is broken
(naming the first bad entry).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from faceapp.errors import FaceappError
from faceapp.gallery.audit import EVENT_KINDS

_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="the tamper-evident audit log: list it, or verify its chain")
    p.add_argument("what", nargs="?", choices=["list", "verify"], default="list",
                   help="list (default) or verify the hash chain")
    p.add_argument("--since", metavar="WHEN",
                   help="only entries from WHEN on: an ISO date/time (UTC unless it says) or "
                        "a span back from now, e.g. 7d, 12h, 30m")
    p.add_argument("--action", choices=EVENT_KINDS, metavar="ACTION",
                   help=f"only this action: {', '.join(EVENT_KINDS)}")
    p.add_argument("--limit", type=int, help="only the last N entries")
    p.add_argument("--db", metavar="URL", help="gallery database (default: $FACEAPP_DB or "
                                               "db/faceapp.sqlite)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d`` / ``12h`` / ``30m`` back from ``now``, or an ISO date/time (naive = UTC)."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - {"d": timedelta(days=n), "h": timedelta(hours=n),
                      "m": timedelta(minutes=n)}[unit]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FaceappError(f"--since {text!r}: expected an ISO date/time or e.g. 7d, 12h, 30m") \
            from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _run(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import DatabaseConfig, open_database
    from faceapp.services.governance import Governance, describe_chain

    since = parse_since(args.since) if args.since else None
    engine = open_database(args.db, DatabaseConfig(create=False))
    try:
        governance = Governance(engine)
        if args.what == "verify":
            report = governance.verify_audit()
        else:
            rows = governance.audit_entries(since=since, action=args.action, limit=args.limit)
    finally:
        engine.dispose()
    if args.what == "verify":
        print(json.dumps(report.to_dict(), indent=2) if args.json else describe_chain(report))
        return 0 if report.ok else 1
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
    else:
        lines = [f"{r.id:>6}  {r.time}  {r.actor:<24} {r.action:<10} {r.outcome:<16} "
                 f"{r.person or '-'}  {r.detail}" for r in rows]
        print("\n".join(lines) or "(no entries)")
    return 0
