"""Reading audit logs back: ``fedops audit verify|export`` (audit_commands.py), the compliance
report (compliance.py, compliance_html.py), cross-party anchor checks and log reading."""
