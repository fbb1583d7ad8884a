"""How the invoice workflow runs its activities: timeouts, retries, and which run as local
activities. Constants only; changing them changes what running workflows do."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Short enough that an activity lost with a killed worker is retried within seconds.
ACTIVITY_TIMEOUT = timedelta(seconds=10)
PROVIDER_ACTIVITY_TIMEOUT = timedelta(seconds=60)
SLOW_ACTIVITIES = frozenset({"escalate", "end_placement", "open_legal"})
LOCAL_ACTIVITIES = frozenset(
    {
        "check_command",
        "load_payment",
        "record_payment",
        "record_closed",
        "record_change",
        "post_charges",
    }
)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)

# Continue-as-new at the latest at this many history events, whatever the server suggests (the
# dev server and a default cluster suggest it from 4,096 events, a server configured otherwise
# later or never). The bound is set by replay, not by the server's 51,200-event limit: a worker
# that lost a run from its cache (a restart, an eviction, or a payment signal arriving while the
# run continues as new, which fails that task) replays the whole run within one workflow task,
# which times out after 10 s and is then replayed again. bench/long_life.py (2-core box shared
# with other work, load 14 to 20) measured about 1.3 ms of CPU per event (2,000 events: 2.5 s
# CPU, 4 to 9 s wall); runs of 4,100 and 6,000 events took 19 to 31 s and stayed stuck, runs of
# 2,000 recovered after three timed-out tries. At 1,000 (about 110 days of daily payments) a
# replay stays a few seconds under that load.
# Read when the loop looks (tests lower it). A run that ended at this bound replays only with
# the same number: another number needs a new patch id in place of ``OWN_HISTORY_BOUND``
# (workflows/invoice.py), not just an edit here.
CONTINUE_AS_NEW_AT_EVENTS = 1_000
