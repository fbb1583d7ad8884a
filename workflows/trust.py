"""What the invoice workflow takes on trust: nothing that carries money or state. Pure, no I/O:
the workflow and the domain both import it.

Anyone who reaches the Temporal frontend or its Web UI can send any signal or update. So a
``payment_received`` signal only names a payment: the workflow loads the stored row by id
(the ``load_payment`` activity) and applies its amount, currency, kind and date. And an update
in ``GUARDED_UPDATES`` is applied only when the domain recorded it first (an
``invoice_commands`` row, whose id the request carries as ``command_id``) with the same
``fingerprint``: the ``check_command`` activity looks for that row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from typing import Any

from temporalio.converter import AdvancedJSONEncoder

# workflow.patched() ids: histories from before them replay unchanged.
PAYMENTS_FROM_ROWS = "payments-from-rows"
RECORDED_COMMANDS = "recorded-commands"

# Every update that changes money or collection state. ``send_now`` is left out: it carries
# nothing but who asked, and only sends the step the stored policy has next (once). So is
# ``customer_changed``: it carries nothing either, and the workflow loads the customer's
# stored zone and country by invoice id (``load_customer_zone``).
GUARDED_UPDATES = frozenset(
    {
        "cancel",
        "open_dispute",
        "resolve_dispute",
        "set_plan",
        "cancel_plan",
        "promise",
        "pause",
        "resume",
        "write_off",
        "change_policy",
        "agency_ended",
        "credit_note",
        "change_due_date",
    }
)


def fingerprint(request: Any) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no spaces) without its
    ``command_id``. The JSON is the one Temporal's data converter writes, so the request the
    workflow decodes hashes the same as the one the domain sent."""
    if not is_dataclass(request) or isinstance(request, type):
        raise TypeError(f"not a request: {request!r}")
    data = asdict(request)
    data.pop("command_id", None)
    canonical = json.dumps(data, cls=AdvancedJSONEncoder, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
