"""Request and response bodies of the legal stage (the table is ``models.agency.LegalCase``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

GENERATED = "generated"  # a document arflow wrote (a file in the legal folder)


class LegalDocumentIn(BaseModel):
    """``POST /v1/invoices/{id}/legal/documents``: a document of the case kept elsewhere (a
    court filing, a lawyer's letter, a judgment), by its URL or document-system id."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(
        min_length=1,
        max_length=50,
        pattern=r"^[a-z][a-z0-9_]*$",
        description='e.g. "court_filing", "lawyer_letter", "judgment"',
    )
    reference: str = Field(
        min_length=1, max_length=1000, description="a URL or a document-system id"
    )
    note: str | None = Field(default=None, max_length=2000)

    @field_validator("kind")
    @classmethod
    def _not_generated(cls, value: str) -> str:
        if value == GENERATED:
            raise ValueError("generated documents are written by arflow, not added by hand")
        return value

    @field_validator("name", "reference")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class LegalDocumentPublic(BaseModel):
    n: int = Field(description="its number in the case (1, 2, ...): .../legal/documents/{n}")
    name: str
    kind: str = Field(description="generated (a file arflow wrote) or what a specialist gave")
    reference: str = Field(description="generated: the file's path; else a URL or an id")
    note: str | None = None
    added_at: datetime
    added_by: str
    download_url: str | None = Field(
        default=None, description="generated documents: where to fetch the file"
    )


class LegalCasePublic(BaseModel):
    """``GET /v1/invoices/{id}/legal``: the invoice's legal case and its documents."""

    id: int
    invoice_id: int
    stage: str
    status: str = Field(description="open or closed")
    amount_minor: int = Field(description="the balance claimed when the stage began")
    currency: str
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    documents: list[LegalDocumentPublic]
