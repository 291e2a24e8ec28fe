"""Input discovery (pybids), stimulus map, derivative names, atomic writing, locks."""
