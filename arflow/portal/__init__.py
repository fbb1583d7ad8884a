"""The customer portal: what a customer does with the link sent to them."""
