"""Champion / challenger: a segment's new invoices split between its policy and a challenger
version (``arms``), the experiment's life (``service``) and its report (``report``)."""
