"""SQLModel tables and the Pydantic schemas around them."""

from models.customer import Customer
from models.invoice import AgencyPlacement, Invoice, InvoiceEvent, OutboxMessage, Payment
from models.policy import DunningPolicy

__all__ = [
    "AgencyPlacement",
    "Customer",
    "DunningPolicy",
    "Invoice",
    "InvoiceEvent",
    "OutboxMessage",
    "Payment",
]
