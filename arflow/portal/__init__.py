"""The customer self-service portal: signed links, payments and what a customer asks for."""
