"""Champion / challenger: a segment's experiment (``service``: start, stop, promote) and its
report (``report``). Which arm a new invoice joins is decided where invoices are created
(``arflow.invoices.arms``)."""
