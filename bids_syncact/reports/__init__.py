"""HTML reports and figures."""
