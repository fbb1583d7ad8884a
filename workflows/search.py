"""Typed search attributes of invoice workflows: status, stage, segment (never personal data).

They must be registered on the namespace before a workflow may set them: ``arflow run``
registers them on its embedded dev server; on a real cluster run once
``temporal operator search-attribute create --name ArflowStatus --type Keyword`` (and the same
for ``ArflowStage`` and ``ArflowSegment``). The API checks at start-up whether they exist and
only then asks new workflows to set them (``InvoiceWorkflowInput.search_attributes``), so an
unregistered namespace never stalls a workflow.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("ArflowStatus")
STAGE = SearchAttributeKey.for_keyword("ArflowStage")
SEGMENT = SearchAttributeKey.for_keyword("ArflowSegment")
ALL = (STATUS, STAGE, SEGMENT)
