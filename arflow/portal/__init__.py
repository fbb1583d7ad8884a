"""The customer self-service portal: signed links, what a customer sees, asks for and pays."""
