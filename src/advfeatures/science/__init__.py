"""Science around the paper (temporary)."""
