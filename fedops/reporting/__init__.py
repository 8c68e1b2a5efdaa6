"""Run reports: plots, the HTML run report and the audit compliance export."""
