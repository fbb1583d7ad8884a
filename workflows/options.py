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

# Continue-as-new at the latest at this many history events, whatever the server suggests: the
# dev server (and a default cluster) suggests it from 4,096 events, a server configured
# otherwise may suggest it later or never, and a run must stay well under 10,000 events (the
# server warns from 10,240 and stops a run at 51,200). Read when the loop looks (tests lower it).
# A run that ended at this bound replays only with the same number: another number needs a new
# patch id in place of ``OWN_HISTORY_BOUND`` (workflows/invoice.py), not just an edit here.
CONTINUE_AS_NEW_AT_EVENTS = 6_000
