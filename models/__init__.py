"""SQLModel tables and the Pydantic schemas around them."""

from models.agency import Agency, AgencyUpdate, LegalCase
from models.approval import CreditApproval
from models.bank import CreditEntry, ReceivedLine, SavedCsvMapping, StatementImport
from models.charge import InvoiceCharge
from models.checkout import StripeCheckout, StripeReversal
from models.collection import Dispute, PaymentPlan, Promise, Task
from models.collector import Collector
from models.contact import ContactBlock, CustomerContact
from models.customer import Customer
from models.deployment import Deployment
from models.experiment import Experiment
from models.idempotency import IdempotencyRecord
from models.invoice import (
    AgencyPlacement,
    CreditNote,
    Invoice,
    InvoiceCommand,
    InvoiceEvent,
    OutboxMessage,
    Payment,
)
from models.job import Job, JobItem
from models.policy import DunningPolicy, PolicyVersion
from models.portal import PortalLinkRequest
from models.portal_request import DisputeAttachment, PlanProposal
from models.profile import CustomerEvent, UnbilledOrder
from models.segment import Segment
from models.simulation_job import SimulationResult, SimulationRun
from models.statement import StatementSent
from models.web_session import RevokedSession

__all__ = [
    "Agency",
    "AgencyUpdate",
    "LegalCase",
    "AgencyPlacement",
    "Collector",
    "ContactBlock",
    "CreditApproval",
    "CreditEntry",
    "CreditNote",
    "Customer",
    "CustomerContact",
    "CustomerEvent",
    "Deployment",
    "Dispute",
    "DisputeAttachment",
    "DunningPolicy",
    "Experiment",
    "PolicyVersion",
    "PortalLinkRequest",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceCharge",
    "InvoiceCommand",
    "InvoiceEvent",
    "Job",
    "JobItem",
    "OutboxMessage",
    "PaymentPlan",
    "PlanProposal",
    "Payment",
    "Promise",
    "ReceivedLine",
    "RevokedSession",
    "SavedCsvMapping",
    "Segment",
    "SimulationResult",
    "SimulationRun",
    "StatementImport",
    "StatementSent",
    "StripeCheckout",
    "StripeReversal",
    "Task",
    "UnbilledOrder",
]
