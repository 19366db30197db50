"""scenarios: replay concurrent load and faults against a live ring and report what held."""
