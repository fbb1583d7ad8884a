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
