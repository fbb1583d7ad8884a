"""SQLModel tables and the Pydantic schemas around them."""

from models.bank import CreditEntry, ReceivedLine, SavedCsvMapping, StatementImport
from models.collection import Dispute, PaymentPlan, Promise, Task
from models.contact import ContactBlock
from models.customer import Customer
from models.invoice import AgencyPlacement, Invoice, InvoiceEvent, OutboxMessage, Payment
from models.job import Job, JobItem
from models.policy import DunningPolicy
from models.statement import StatementSent

__all__ = [
    "AgencyPlacement",
    "ContactBlock",
    "CreditEntry",
    "Customer",
    "Dispute",
    "DunningPolicy",
    "Invoice",
    "InvoiceEvent",
    "Job",
    "JobItem",
    "OutboxMessage",
    "PaymentPlan",
    "Payment",
    "Promise",
    "ReceivedLine",
    "SavedCsvMapping",
    "StatementImport",
    "StatementSent",
    "Task",
]
