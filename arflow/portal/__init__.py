"""The customer self-service portal: signed links, what a customer sees and asks for."""
