"""The run's time layout: where the embedding's training period ends and where the ranker's windows lie.

One log, one clock, cut once:

    first day ............................ cutoff ........... valid_start ..... test_start ..... last day
    |<-- embedding training period -->|<------------- embedding held-out period --------------------->|
                                       |<-- ranker train -->|<-- ranker valid -->|<-- ranker test -->|

- `cutoff` (the embedding cut-off) is midnight UTC starting the last round(days * holdout_frac) calendar days of the
  log (at least one day, and at least one day before it). Every pair the embedding model trains on is mined from
  events before it; the retrieval table's ground truth comes from events at or after it.
- The ranker tests on the last `test_days` days, validates on the `valid_days` before them, and trains on the days
  from the cutoff up to validation: its impressions all come after the embedding's training period, so the SAIL
  features they see were computed by a model that knew nothing of their day (features become valid at the
  cutoff; `jobs.pipeline` stamps them so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


def embedding_cutoff(first_ts: datetime, last_ts: datetime, holdout_frac: float) -> datetime:
    """Midnight UTC that starts the held-out days: the log's days are [first day, last day]; the last
    round(days * holdout_frac) of them (at least 1, at most days - 1) are held out."""
    if not 0.0 < holdout_frac < 1.0:
        raise ValueError(f"holdout_frac must be in (0, 1), got {holdout_frac}")
    d0, d1 = first_ts.astimezone(UTC).date(), last_ts.astimezone(UTC).date()
    days = (d1 - d0).days + 1
    held = min(max(1, round(days * holdout_frac)), max(1, days - 1))
    return datetime.combine(d0 + timedelta(days=days - held), time(0), tzinfo=UTC)


@dataclass(frozen=True)
class Timeline:
    """The cut points of one log (see the module docstring); every date is a UTC calendar day."""

    first_day: date
    last_day: date
    cutoff: datetime  # embedding cut-off: midnight UTC of the first held-out day
    valid_start: date  # ranker validation starts (its training window is [cutoff, valid_start))
    test_start: date  # ranker test starts (up to last_day inclusive)

    @property
    def ranker_train_days(self) -> int:
        return (self.valid_start - self.cutoff.date()).days

    def to_dict(self) -> dict[str, str | int]:
        return {
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "cutoff": self.cutoff.isoformat(),
            "ranker_train_start": self.cutoff.date().isoformat(),
            "valid_start": self.valid_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "ranker_train_days": self.ranker_train_days,
        }


def build_timeline(
    first_ts: datetime, last_ts: datetime, holdout_frac: float, valid_days: int, test_days: int
) -> Timeline:
    """The layout of a log spanning [first_ts, last_ts]. Raises ValueError, naming the settings, when the
    embedding's held-out days do not leave the ranker at least one training day before its validation days."""
    cutoff = embedding_cutoff(first_ts, last_ts, holdout_frac)
    d0, d1 = first_ts.astimezone(UTC).date(), last_ts.astimezone(UTC).date()
    days = (d1 - d0).days + 1
    if valid_days < 0 or test_days < 1:
        raise ValueError(f"ranker valid_days must be >= 0 and test_days >= 1, got {valid_days} / {test_days}")
    test_start = d1 - timedelta(days=test_days - 1)
    valid_start = test_start - timedelta(days=valid_days)
    held = (d1 - cutoff.date()).days + 1
    if valid_start <= cutoff.date():
        raise ValueError(
            f"the embedding holds out the last {held} of the log's {days} days (embedding holdout_frac "
            f"{holdout_frac}), which must cover the ranker's valid_days ({valid_days}) + test_days ({test_days}) and "
            f"at least one ranker training day: raise holdout_frac or shorten the ranker's windows"
        )
    return Timeline(d0, d1, cutoff, valid_start, test_start)


def log_span(days: int, start: date) -> tuple[datetime, datetime]:
    """(first, last) timestamps of a log covering `days` calendar days from `start` (generated worlds)."""
    first = datetime.combine(start, time(0), tzinfo=UTC)
    return first, first + timedelta(days=days) - timedelta(microseconds=1)
