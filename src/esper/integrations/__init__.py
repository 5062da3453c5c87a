"""Integrations with other training tools (each an optional extra): `esper.integrations.lightning`."""
